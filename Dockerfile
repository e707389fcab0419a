# Build: docker build -t gamelan-executor .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/executor ./cmd/executor

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/executor /executor
# 8090: probes and metrics; 9090: the push gRPC server (with the gRPC transport).
EXPOSE 8090 9090
USER nonroot:nonroot
ENTRYPOINT ["/executor"]
