package component

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/executor"
)

// tracedLogger is a handler that writes one line through executor.Logger.
type tracedLogger struct{}

func (tracedLogger) Descriptor() executor.Descriptor {
	return executor.Descriptor{Type: "traced-logger", CommunicationType: executor.GRPC}
}

func (tracedLogger) Execute(ctx context.Context, _ *executor.Task) (*executor.Result, error) {
	executor.Logger(ctx).Info("line from the handler")
	return executor.Success(map[string]any{"recording": executor.Span(ctx).IsRecording()}), nil
}

// TestTracingThroughTheService runs the service with OTEL_EXPORTER_OTLP_ENDPOINT
// pointing at an OTLP/HTTP receiver on 127.0.0.1: a task bringing the
// engine's traceparent runs under a recording span of the engine's trace,
// its handler's log line carries the task's fields and the trace, its
// result carries the trace back, and the spans reach the receiver by the
// time the service has stopped.
func TestTracingThroughTheService(t *testing.T) {
	var posts atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body, _ := io.ReadAll(r.Body); r.Method == http.MethodPost && r.URL.Path == "/v1/traces" && len(body) > 0 {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(receiver.Close)

	vars := baseEnv()
	vars["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.URL
	engine := memory.NewBackend()
	ports := service.Ports{Source: engine.TaskSource(), Sink: engine.ResultSink(), Registrar: engine.Registrar(), Heartbeater: engine.Heartbeater()}
	r := start(t, engine, func(ctx context.Context, stdout, stderr io.Writer) error {
		return service.RunWithPorts(ctx, nil, env(vars), stdout, stderr, []executor.Executor{tracedLogger{}}, ports)
	})
	on := r.logs.waitFor(t, "tracing is on")
	assert.Equal(t, receiver.URL+"/v1/traces", on["endpoint"])
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)

	const traceID, engineSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r.engine.Submit(domain.Task{TaskID: "task-1", RunID: "run-9", NodeID: "log", ExecutorType: "traced-logger", Attempt: 2,
		Context: map[string]any{domain.TraceParentKey: "00-" + traceID + "-" + engineSpan + "-01"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.engine.WaitForResults(ctx, 1))
	res := r.engine.UniqueResults()["run-9:log:2"]
	require.Equal(t, domain.StatusCompleted, res.Status, "%+v", res.Error)
	assert.Equal(t, true, res.Output["recording"], "the handler's span does not record with tracing on")
	assert.Regexp(t, "^00-"+traceID+"-[0-9a-f]{16}-01$", res.Trace.TraceParent, "the result does not carry the trace back")
	assert.NotContains(t, res.Trace.TraceParent, engineSpan, "the result echoes the engine's span instead of the executor's")

	line := r.logs.waitFor(t, "line from the handler")
	assert.Equal(t, "run-9", line["run_id"])
	assert.Equal(t, "log", line["node_id"])
	assert.Equal(t, "task-1", line["task_id"])
	assert.Equal(t, float64(2), line["attempt"])
	assert.Equal(t, "traced-logger", line["executor_type"])
	assert.Equal(t, traceID, line["trace_id"])
	assert.Regexp(t, regexp.MustCompile("^[0-9a-f]{16}$"), line["span_id"])
	assert.NotEqual(t, engineSpan, line["span_id"], "the handler's span is its own, a child of the engine's")

	require.NoError(t, r.stop(t))
	assert.Positive(t, posts.Load(), "no spans were exported to OTEL_EXPORTER_OTLP_ENDPOINT")
}

// TestTracingOffByDefault: without OTEL_* variables, the service says
// tracing is off, the handler's span does not record, and the result
// echoes the engine's trace context.
func TestTracingOffByDefault(t *testing.T) {
	engine := memory.NewBackend()
	ports := service.Ports{Source: engine.TaskSource(), Sink: engine.ResultSink(), Registrar: engine.Registrar(), Heartbeater: engine.Heartbeater()}
	r := start(t, engine, func(ctx context.Context, stdout, stderr io.Writer) error {
		return service.RunWithPorts(ctx, nil, env(baseEnv()), stdout, stderr, []executor.Executor{tracedLogger{}}, ports)
	})
	r.logs.waitFor(t, "tracing is off")
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)

	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r.engine.Submit(domain.Task{RunID: "run-1", NodeID: "log", ExecutorType: "traced-logger", Attempt: 1,
		Context: map[string]any{domain.TraceParentKey: parent}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.engine.WaitForResults(ctx, 1))
	res := r.engine.UniqueResults()["run-1:log:1"]
	assert.Equal(t, false, res.Output["recording"])
	assert.Equal(t, parent, res.Trace.TraceParent)
	line := r.logs.waitFor(t, "line from the handler")
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", line["trace_id"], "the engine's trace id is in the handler's log even with tracing off")
	assert.Equal(t, "00f067aa0ba902b7", line["span_id"])
}
