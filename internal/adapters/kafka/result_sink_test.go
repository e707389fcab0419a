package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

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

// Close flushes what is still in flight and says when that fails, instead
// of dropping the records silently: a delivery gave up waiting (its context
// ended) while its record was still retried against a topic that does not
// exist, so Close's flush fails, and its error names the producer.
func TestProducerCloseReportsRecordsItCouldNotFlush(t *testing.T) {
	b := kafkatest.Start(t)
	cfg := brokerConfig(b, "")
	cfg.ResultsTopic = "no-such-topic"
	producer, err := kafka.NewProducer(cfg)
	require.NoError(t, err)
	sink := kafka.NewResultSink(producer, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = sink.Deliver(ctx, []domain.Result{{RunID: "run-lost", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}})
	require.Error(t, err, "a topic that does not exist cannot take the result")

	err = producer.Close()
	require.Error(t, err, "Close dropped the records it could not flush")
	assert.Contains(t, err.Error(), "close kafka producer")
	require.NoError(t, producer.Close(), "a second Close")
}

// A result the brokers refuse for good (larger than the topic takes) is
// reported as such, so that the runtime isolates it instead of retrying it
// for ever; a record that merely shared its broker batch with it is sent
// again alone and delivered.
func TestResultSinkReportsRecordsTheBrokersRefuseForGood(t *testing.T) {
	b := kafkatest.Start(t, kafkatest.WithClusterOptions(kfake.BrokerConfigs(map[string]string{"message.max.bytes": "65536"})))
	cfg := brokerConfig(b, "")
	sink := kafka.NewResultSink(newProducer(t, cfg), cfg)
	small := domain.Result{RunID: "run-small", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted, Output: map[string]any{"ok": true}}
	big := domain.Result{RunID: "run-big", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted,
		Output: map[string]any{"report": strings.Repeat("x", 100<<10)}}

	err := sink.Deliver(waitContext(t), []domain.Result{small, big})
	require.ErrorIs(t, err, domain.ErrResultTooLarge)
	require.NoError(t, sink.Deliver(waitContext(t), []domain.Result{small}), "a small result alone is taken")
}
