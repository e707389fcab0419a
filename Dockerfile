# syntax=docker/dockerfile:1
# The executor service's image: a static binary on distroless, as non-root.
#
#   docker build -t gamelan-executor:1.4.0 \
#     --build-arg VERSION=1.4.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# The binary is built by scripts/build-static.sh, the script CI runs too
# (make images-check checks its output is static and stamped): keep every
# build flag in that script, never here.

# The build runs on the builder's own platform and cross-compiles to the
# target's (docker buildx build --platform linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH VERSION COMMIT BUILD_DATE
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH sh scripts/build-static.sh ./cmd/executor /out/executor

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION COMMIT
LABEL org.opencontainers.image.title="gamelan-executor" \
      org.opencontainers.image.description="Remote executor service for Gamelan workflow engines" \
      org.opencontainers.image.source="https://github.com/gamelan-go/executor" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT"
COPY --from=build /out/executor /executor
# 8090: /q/health/* probes and /q/metrics (GAMELAN_EXECUTOR_HTTP_PORT);
# 9090: the push gRPC server, with the gRPC transport (GAMELAN_EXECUTOR_GRPC_PORT);
# 8081: the REST intake, with the REST transport (GAMELAN_EXECUTOR_REST_PORT).
EXPOSE 8090 9090 8081
USER nonroot:nonroot
ENTRYPOINT ["/executor"]
