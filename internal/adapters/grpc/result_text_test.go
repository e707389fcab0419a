package grpc

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// A handler's error text that is not valid UTF-8 (bytes it echoed, a
// message cut mid-character) cannot travel in a protobuf string as it is:
// the result would fail to encode on every attempt, and the runtime would
// resend its batch, and hold every result behind it, until shutdown. Found
// by FuzzStructConversion. The text is delivered with the invalid bytes
// replaced, and the rest of the batch with it.
func TestResultSinkDeliversErrorTextThatIsNotUTF8(t *testing.T) {
	engine, conn := startEngine(t)
	sink := NewResultSink(gamelanv1.NewExecutorServiceClient(conn), 0)
	bad := domain.Result{TaskID: "bad", RunID: "run-bad", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-bad",
		ExecutorID: taxExecutorID, Status: domain.StatusFailed, CompletedAt: time.Now(),
		Error: &domain.ErrorInfo{Code: "BAD_\xff", Message: "input \xc3 was not text", StackTrace: "main.go:1 \xfe"}}
	good := domain.Result{TaskID: "good", RunID: "run-good", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-good",
		ExecutorID: taxExecutorID, Status: domain.StatusCompleted, Output: map[string]any{"tax": 21.0}, CompletedAt: time.Now()}

	require.NoError(t, sink.Deliver(testContext(t), []domain.Result{bad, good}))
	unique := engine.UniqueResults()
	require.Contains(t, unique, domain.IdempotencyKey("run-good", "calculate", 1))
	got := unique[domain.IdempotencyKey("run-bad", "calculate", 1)]
	require.NotNil(t, got, "no result for the task whose error text is not UTF-8")
	assert.Equal(t, "BAD_\uFFFD", got.GetError().GetCode())
	assert.Equal(t, "input \uFFFD was not text", got.GetError().GetMessage())
	assert.Equal(t, "main.go:1 \uFFFD", got.GetError().GetStackTrace())
}
