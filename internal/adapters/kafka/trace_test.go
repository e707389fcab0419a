package kafka

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func header(key, value string) *sarama.RecordHeader {
	return &sarama.RecordHeader{Key: []byte(key), Value: []byte(value)}
}

// A task record's headers are read as its trace context: repeated
// tracestate and baggage headers are joined, two traceparents are none,
// an oversized or non-UTF-8 value is dropped, other headers are ignored.
func TestTraceFromHeaders(t *testing.T) {
	got := traceFromHeaders([]*sarama.RecordHeader{
		header(AuthorizationHeader, "Bearer x"), header("traceparent", testTraceParent),
		header("tracestate", "a=1"), nil, header("tracestate", "b=2"), header("baggage", "\xff"),
	})
	assert.Equal(t, &domain.TraceContext{TraceParent: testTraceParent, TraceState: "a=1,b=2"}, got)
	assert.Nil(t, traceFromHeaders([]*sarama.RecordHeader{header("traceparent", "x"), header("traceparent", "y")}), "two traceparents are none")
	assert.Nil(t, traceFromHeaders([]*sarama.RecordHeader{header("baggage", strings.Repeat("k", domain.MaxBaggageBytes+1))}), "an oversized baggage is dropped")
}

// A result's trace context goes in its record's headers, and also in its
// output's reserved keys when its task brought it in its context; the
// handler's output map is not changed.
func TestResultTraceHeadersAndOutput(t *testing.T) {
	tc := domain.TraceContext{TraceParent: testTraceParent, Baggage: "k=v"}
	headers := traceHeaders(&tc)
	require.Len(t, headers, 2, "no header for an empty value")
	assert.Equal(t, "traceparent", string(headers[0].Key))
	assert.Equal(t, "baggage", string(headers[1].Key))

	output := map[string]any{"tax": 1.0}
	tc.InContext = true
	var msg ResultMessage
	require.NoError(t, json.Unmarshal(encodeResult(domain.Result{RunID: "r", NodeID: "n", Status: domain.StatusCompleted, Output: output, Trace: &tc}), &msg))
	assert.Equal(t, testTraceParent, msg.Output[domain.TraceParentKey])
	assert.Equal(t, map[string]any{"tax": 1.0}, output)
	tc.InContext = false
	var plain ResultMessage
	require.NoError(t, json.Unmarshal(encodeResult(domain.Result{RunID: "r", NodeID: "n", Status: domain.StatusCompleted, Output: output, Trace: &tc}), &plain))
	assert.NotContains(t, plain.Output, domain.TraceParentKey)
}
