package telemetry_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/telemetry"
)

func getenv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestTracingIsOffUnlessAnOTLPExporterIsConfigured(t *testing.T) {
	for _, tc := range []struct {
		name     string
		vars     map[string]string
		on       bool
		protocol string
		endpoint string
	}{
		{name: "nothing set", vars: nil, on: false},
		{name: "endpoint", vars: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			on: true, protocol: "http/protobuf", endpoint: "http://127.0.0.1:4318/v1/traces"},
		{name: "traces endpoint used as given", vars: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/custom"},
			on: true, protocol: "http/protobuf", endpoint: "http://127.0.0.1:4318/custom"},
		{name: "grpc", vars: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			on: true, protocol: "grpc", endpoint: "http://127.0.0.1:4317"},
		{name: "traces protocol wins", vars: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			on: true, protocol: "grpc", endpoint: "http://127.0.0.1:4317"},
		{name: "exporter otlp alone", vars: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			on: true, protocol: "http/protobuf", endpoint: "default"},
		{name: "exporter none", vars: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}, on: false},
		{name: "sdk disabled", vars: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}, on: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := telemetry.NewTracing(context.Background(), getenv(tc.vars), telemetry.DefaultServiceName, "1.2.3", slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
			assert.Equal(t, tc.on, tr.On())
			assert.Equal(t, tc.on, tr.Tracer != nil)
			assert.NotNil(t, tr.Propagator, "the propagator is set even when tracing is off")
			assert.Equal(t, tc.protocol, tr.Protocol)
			assert.Equal(t, tc.endpoint, tr.Endpoint)
		})
	}
}

func TestTracingRefusesAnUnknownProtocol(t *testing.T) {
	_, err := telemetry.NewTracing(context.Background(), getenv(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
	}), telemetry.DefaultServiceName, "", slog.New(slog.DiscardHandler))
	assert.ErrorContains(t, err, "http/json")
}

// otlpReceiver is an OTLP/HTTP receiver on 127.0.0.1 that counts the
// export requests made to /v1/traces.
func otlpReceiver(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			if body, _ := io.ReadAll(r.Body); len(body) > 0 {
				posts.Add(1)
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv, &posts
}

func TestTracingExportsToTheConfiguredEndpointOnShutdown(t *testing.T) {
	srv, posts := otlpReceiver(t)
	tr, err := telemetry.NewTracing(context.Background(), getenv(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_SERVICE_NAME": "test-executor",
	}), telemetry.DefaultServiceName, "1.2.3", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, span := tr.Tracer.Start(context.Background(), "one")
	span.End()
	assert.Zero(t, posts.Load(), "spans are batched, not sent one by one")
	require.NoError(t, tr.Shutdown(context.Background()))
	assert.Equal(t, int64(1), posts.Load(), "shutdown did not flush the batched span")
}
