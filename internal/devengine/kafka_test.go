package devengine

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	kafkamsg "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// TestKafkaRecordTokensAreCheckedAsOfTheirProduction: a result record read
// late (consumer lag, an outage), its token expired meanwhile, still counts
// within TokenLag; one whose token had expired when it was produced, one
// dated back further than TokenLag (a replayed old token), or one naming
// another executor is refused.
func TestKafkaRecordTokensAreCheckedAsOfTheirProduction(t *testing.T) {
	secret := []byte(strings.Repeat("k", security.MinSecretBytes))
	e, d := startGatedEngine(t, "KAFKA")
	const executorID = "tax-service-tax"
	e.Register(Executor{ID: executorID, Type: "tax", CommunicationType: "KAFKA", MaxConcurrent: 4})
	k, err := NewKafka(KafkaConfig{EmbeddedAddress: "127.0.0.1:0", Partitions: 1}, e,
		verifyAsOf(security.VerifierConfig{Secret: secret, Issuer: "gamelan-executor"}), nil, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(k.Close)
	ctx, stop := context.WithCancel(context.Background())
	consumed := make(chan struct{})
	go func() { k.Run(ctx); close(consumed) }()
	t.Cleanup(func() { stop(); <-consumed })

	producer, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.DefaultProduceTopic(k.cfg.ResultsTopic))
	require.NoError(t, err)
	t.Cleanup(producer.Close)
	tenMinutesAgo := time.Now().Add(-10 * time.Minute) // TokenLag's default
	// result produces the result of a new task at producedAt, with a token
	// of subject minted at mintedAt (valid 5 minutes).
	result := func(subject string, mintedAt, producedAt time.Time) Task {
		t.Helper()
		task := submit(t, e, TaskSpec{ExecutorType: "tax"})
		d.next(t).reply <- nil
		minter, err := security.NewMinter(security.MinterConfig{Secret: secret, Issuer: "gamelan-executor", Audience: "gamelan-engine",
			TTL: 5 * time.Minute, Subject: subject, Now: func() time.Time { return mintedAt }})
		require.NoError(t, err)
		token, err := minter.Token("")
		require.NoError(t, err)
		value, err := json.Marshal(kafkamsg.ResultMessage{RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt,
			Status: string(domain.StatusCompleted), ExecutionToken: task.ExecutionToken, CompletedAt: producedAt, ExecutorID: executorID})
		require.NoError(t, err)
		require.NoError(t, producer.ProduceSync(t.Context(), &kgo.Record{Key: []byte(task.RunID), Value: value, Timestamp: producedAt,
			Headers: []kgo.RecordHeader{{Key: kafkamsg.AuthorizationHeader, Value: []byte("Bearer " + token)}}}).FirstErr())
		return task
	}
	aYearAgo := time.Now().AddDate(-1, 0, 0)
	expiredWhenProduced := result(executorID, tenMinutesAgo, tenMinutesAgo.Add(6*time.Minute))
	anotherExecutors := result("intruder", tenMinutesAgo, tenMinutesAgo)
	backdated := result(executorID, aYearAgo, aYearAgo)
	lagging := result(executorID, tenMinutesAgo.Add(time.Minute), tenMinutesAgo.Add(time.Minute))

	// One partition: once the last record counts, the others were read.
	waitFor(t, e, "the lagging result recorded", func() bool { got, _ := e.Task(lagging.ID); return got.Final() })
	got, _ := e.Task(lagging.ID)
	assert.Equal(t, string(domain.StatusCompleted), got.State)
	for _, refused := range []Task{expiredWhenProduced, anotherExecutors, backdated} {
		got, _ := e.Task(refused.ID)
		assert.Equal(t, StateAssigned, got.State)
	}
	assert.Equal(t, int64(3), e.Counters().Refused)
}
