package kafka_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
)

// A result whose record would exceed MaxMessageBytes is produced as FAILED
// OUTPUT_TOO_LARGE, so that it does not hold the rest of its batch (and its
// task's offset) back for ever.
func TestResultSinkAnswersAnOversizedResult(t *testing.T) {
	b := kafkatest.Start(t)
	cfg := brokerConfig(b, "")
	sink := kafka.NewResultSink(newProducer(t, cfg), cfg)
	results := b.Results(t)

	small := domain.Result{RunID: "run-small", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-small",
		Status: domain.StatusCompleted, Output: map[string]any{"tax": 21.0}, CompletedAt: time.Now()}
	huge := domain.Result{RunID: "run-huge", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-huge",
		Status: domain.StatusCompleted, Output: map[string]any{"report": strings.Repeat("x", 3<<20)}, CompletedAt: time.Now()}
	batch := []domain.Result{small, huge}

	err := sink.Deliver(waitContext(t), batch)
	require.NoError(t, err, "a batch holding one oversized result can never be delivered")

	require.NoError(t, results.WaitForUnique(waitContext(t), 2))
	got := results.UniqueResults()[domain.IdempotencyKey("run-huge", "calculate", 1)]
	assert.Equal(t, "token-huge", got.ExecutionToken)
	assert.Equal(t, string(domain.StatusFailed), got.Status, "the oversized result should be answered FAILED")
	if assert.NotNil(t, got.Error) {
		assert.NotEmpty(t, got.Error.Code)
	}
}
