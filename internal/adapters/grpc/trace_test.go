package grpc

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// A push call's metadata is read as the task's trace context: repeated
// tracestate and baggage values are joined, two traceparents are none, and
// an oversized value is dropped without a word.
func TestTraceFromMetadata(t *testing.T) {
	ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs(
		"traceparent", testTraceParent, "tracestate", "a=1", "tracestate", "b=2", "baggage", strings.Repeat("x", domain.MaxBaggageBytes+1)))
	assert.Equal(t, &domain.TraceContext{TraceParent: testTraceParent, TraceState: "a=1,b=2"}, traceFromMetadata(ctx))

	twice := metadata.NewIncomingContext(t.Context(), metadata.Pairs("traceparent", testTraceParent, "traceparent", testTraceParent))
	assert.Nil(t, traceFromMetadata(twice), "two traceparents are none")
	assert.True(t, traceFromMetadata(t.Context()).IsZero())
}

// A result whose task brought its trace context in its context carries it
// back in its output's reserved keys, even without output of its own, and
// keeps it in its minimal form; one that came by push does not put it in
// its output.
func TestResultOutputCarriesAStreamedTasksTrace(t *testing.T) {
	streamed := domain.Result{RunID: "r", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted,
		Trace: &domain.TraceContext{TraceParent: testTraceParent, Baggage: "k=v", InContext: true}}
	fields := resultToProto(streamed).GetOutput().GetFields()
	assert.Equal(t, testTraceParent, fields[domain.TraceParentKey].GetStringValue())
	assert.Equal(t, "k=v", fields[domain.BaggageKey].GetStringValue())
	assert.NotContains(t, fields, domain.TraceStateKey, "an empty value is not sent")

	pushed := streamed
	pushed.Trace = &domain.TraceContext{TraceParent: testTraceParent, Baggage: "k=v"}
	pushed.Output = map[string]any{"tax": 1.0}
	assert.NotContains(t, resultToProto(pushed).GetOutput().GetFields(), domain.TraceParentKey)
	assert.Equal(t, map[string]any{"tax": 1.0}, pushed.Output, "the handler's map is not changed")

	huge := streamed
	huge.Output = map[string]any{"report": strings.Repeat("x", 1<<20)}
	sink := NewResultSink(nil, 64<<10)
	msg, err := sink.message(huge)
	require.NoError(t, err)
	assert.Equal(t, domain.CodeOutputTooLarge, msg.GetError().GetCode())
	assert.Equal(t, testTraceParent, msg.GetOutput().GetFields()[domain.TraceParentKey].GetStringValue(), "the minimal form keeps the trace context")
}

// A ReportResults call of one pushed task's result carries its trace
// context in its metadata; a call of several carries none.
func TestReportResultsMetadata(t *testing.T) {
	engine, conn := startEngine(t)
	sink := NewResultSink(gamelanv1.NewExecutorServiceClient(conn), 0)
	result := func(node string) domain.Result {
		return domain.Result{RunID: "run", NodeID: node, Attempt: 1, ExecutorID: taxExecutorID, Status: domain.StatusCompleted,
			CompletedAt: time.Now(), Trace: &domain.TraceContext{TraceParent: testTraceParent, TraceState: "a=1"}}
	}
	require.NoError(t, sink.Deliver(testContext(t), []domain.Result{result("alone")}))
	require.NoError(t, sink.Deliver(testContext(t), []domain.Result{result("first"), result("second")}))

	alone, ok := engine.ResultTrace("run:alone:1")
	require.True(t, ok)
	assert.Equal(t, domain.TraceContext{TraceParent: testTraceParent, TraceState: "a=1"}, alone)
	for _, node := range []string{"first", "second"} {
		tc, ok := engine.ResultTrace("run:" + node + ":1")
		require.True(t, ok)
		assert.True(t, tc.IsZero(), "a batch of several has no per-result metadata: %+v", tc)
	}
}
