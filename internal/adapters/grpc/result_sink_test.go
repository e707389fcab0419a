package grpc

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// A result larger than the maximum message size is answered FAILED
// OUTPUT_TOO_LARGE, so that it does not hold the rest of its batch back for
// ever (the runtime would resend the batch until shutdown).
func TestResultSinkAnswersAnOversizedResult(t *testing.T) {
	engine, conn := startEngine(t)
	sink := NewResultSink(gamelanv1.NewExecutorServiceClient(conn), 0)
	small := domain.Result{TaskID: "small", RunID: "run-small", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-small",
		ExecutorID: taxExecutorID, Status: domain.StatusCompleted, Output: map[string]any{"tax": 21.0}, CompletedAt: time.Now()}
	huge := domain.Result{TaskID: "huge", RunID: "run-huge", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-huge",
		ExecutorID: taxExecutorID, Status: domain.StatusCompleted, Output: map[string]any{"report": strings.Repeat("x", 5<<20)}, CompletedAt: time.Now()}
	batch := []domain.Result{huge, small}

	err := sink.Deliver(testContext(t), batch)
	require.NoError(t, err, "a batch holding one oversized result can never be delivered")
	unique := engine.UniqueResults()
	require.Contains(t, unique, domain.IdempotencyKey("run-small", "calculate", 1))
	got := unique[domain.IdempotencyKey("run-huge", "calculate", 1)]
	require.NotNil(t, got, "no answer for the oversized result")
	assert.Equal(t, "token-huge", got.GetExecutionToken())
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, got.GetStatus())
	assert.NotEmpty(t, got.GetError().GetCode())
}

// In bidi mode results go through ReportResults only, never copied on the
// ExecuteStream: a copy could only be best effort (an engine reading the
// stream slowly would see some and not others), and ReportResults' Empty is
// the acknowledgement. Each result reaches the engine once.
func TestBidiResultsGoThroughReportResultsOnly(t *testing.T) {
	engine := grpctest.NewEngine()
	conn := dial(t, ClientConfig{Target: engine.Start(t)})
	require.NoError(t, NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Register(testContext(t), taxRegistration()))
	source, sink := newTestIntake(t, conn, IntakeBidi, taxRegistration(), fastReconnect)
	startSource(t, source, porttest.NewIntake(4))
	require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 1 }, waitTimeout, time.Millisecond,
		"the ExecuteStream never opened")

	var results []domain.Result
	for _, id := range []string{"1", "2", "3"} {
		results = append(results, domain.Result{TaskID: "t" + id, RunID: "run-" + id, NodeID: "calculate", Attempt: 1,
			ExecutionToken: "token-" + id, ExecutorID: taxExecutorID, Status: domain.StatusCompleted,
			Output: map[string]any{"tax": 1.5}, CompletedAt: time.Now()})
	}
	require.NoError(t, sink.Deliver(testContext(t), results))
	// An acknowledgement written on the stream after the delivery arrives
	// after anything written on it before: copies would be there by then.
	engine.Enqueue(taxExecutorID, &gamelanv1.ExecutionTask{TaskId: "later", RunId: "run-later", NodeId: "n", Attempt: 1})
	require.Eventually(t, func() bool { return len(engine.Acks(taxExecutorID)) == 1 }, waitTimeout, time.Millisecond)
	assert.Len(t, engine.UniqueResults(), len(results))
	assert.Len(t, engine.Results(), len(results), "a result reached the engine twice: on the stream too")
	assert.Equal(t, 1, engine.OpenStreams(taxExecutorID))
}
