# syntax=docker/dockerfile:1
# The reference engine's image (cmd/devengine): the engine side of the
# executor protocol over gRPC, HTTP and its embedded Kafka broker, for
# local stacks and tests, not for production. Built from the module root:
#
#   docker build -f devengine.Dockerfile -t gamelan-devengine:1.4.0 \
#     --build-arg VERSION=1.4.0 --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# Same build as the executor's Dockerfile: scripts/build-static.sh holds
# every build flag (make images-check checks its output in CI).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH VERSION COMMIT BUILD_DATE
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH sh scripts/build-static.sh ./cmd/devengine /out/devengine

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION COMMIT
LABEL org.opencontainers.image.title="gamelan-devengine" \
      org.opencontainers.image.description="Reference engine for the Gamelan executor protocol (development and tests)" \
      org.opencontainers.image.source="https://github.com/gamelan-go/executor" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT"
COPY --from=build /out/devengine /devengine
# The engine binds loopback by default (a developer's machine); in a
# container it must listen on every interface to be reached at all.
ENV DEVENGINE_HTTP_ADDR=0.0.0.0:8080 \
    DEVENGINE_GRPC_ADDR=0.0.0.0:9000 \
    DEVENGINE_KAFKA_ADDR=0.0.0.0:9092
# 8080: task API and REST registry; 9000: ExecutorService (gRPC);
# 9092: the embedded Kafka broker, which clients in other containers reach
# only when DEVENGINE_KAFKA_ADVERTISED_HOST names this container (its
# Compose service name, for example): see deploy/compose.yaml.
EXPOSE 8080 9000 9092
USER nonroot:nonroot
ENTRYPOINT ["/devengine"]
