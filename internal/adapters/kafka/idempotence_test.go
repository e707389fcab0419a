package kafka_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
)

// producerIDsOf reads every record of topic from its start and returns the
// producer id of each (-1 for a record a plain producer wrote): Kafka
// stores the id in the record batch header, which kgo exposes.
func producerIDsOf(t *testing.T, b *kafkatest.Broker, topic string, n int) []int64 {
	t.Helper()
	client, err := kgo.NewClient(append(b.ClientOptions(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	defer client.Close()
	ctx := waitContext(t)
	var ids []int64
	for len(ids) < n {
		fetches := client.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "waiting for %d records of %s, got %d", n, topic, len(ids))
		fetches.EachRecord(func(r *kgo.Record) { ids = append(ids, r.ProducerID) })
	}
	return ids
}

// deliverOne delivers one result through a sink on producer.
func deliverOne(ctx context.Context, producer *kafka.Producer, cfg kafka.Config, runID string) error {
	return kafka.NewResultSink(producer, cfg).Deliver(ctx, []domain.Result{{RunID: runID, NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}})
}

// By default results are produced by an idempotent producer: the record
// batches carry a producer id.
func TestProducerIsIdempotentByDefault(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	cfg := brokerConfig(b, "")
	producer := newProducer(t, cfg)
	require.NoError(t, deliverOne(waitContext(t), producer, cfg, "run-idempotent"))
	assert.True(t, producer.Idempotent())
	ids := producerIDsOf(t, b, kafkatest.ResultsTopic, 1)
	assert.GreaterOrEqual(t, ids[0], int64(0), "the record batch carries a producer id")
}

// With idempotence off the batches carry none.
func TestProducerIdempotenceOff(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	cfg := brokerConfig(b, "")
	cfg.Idempotence = kafka.IdempotenceOff
	producer := newProducer(t, cfg)
	require.NoError(t, deliverOne(waitContext(t), producer, cfg, "run-plain"))
	assert.False(t, producer.Idempotent())
	assert.Equal(t, []int64{-1}, producerIDsOf(t, b, kafkatest.ResultsTopic, 1))
}

// Brokers that cannot give a producer id: one whose API versions lack
// InitProducerId, one that refuses it (no IDEMPOTENT_WRITE permission).
// In auto mode the producer falls back, logs it, and results are still
// produced; in on mode sending fails, saying why.
func TestProducerIdempotenceFallback(t *testing.T) {
	t.Parallel()
	brokers := map[string]func(t *testing.T) *kafkatest.Broker{
		"InitProducerId unsupported": func(t *testing.T) *kafkatest.Broker {
			versions := kversion.V2_8_0()
			versions.SetMaxKeyVersion(kmsg.InitProducerID.Int16(), -1)
			return kafkatest.Start(t, kafkatest.WithClusterOptions(kfake.MaxVersions(versions)))
		},
		"InitProducerId refused": func(t *testing.T) *kafkatest.Broker {
			b := kafkatest.Start(t)
			b.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.InitProducerID}, Err: kerr.ClusterAuthorizationFailed, Count: -1})
			return b
		},
	}
	for name, start := range brokers {
		t.Run(name+"/auto", func(t *testing.T) {
			t.Parallel()
			b := start(t)
			cfg := brokerConfig(b, "")
			producer := newProducer(t, cfg)
			logs := newLogBook(t)
			producer.WithLog(logs.logger())
			require.NoError(t, deliverOne(waitContext(t), producer, cfg, "run-fallback"))
			assert.False(t, producer.Idempotent())
			warnings := logs.find("without idempotence")
			require.Len(t, warnings, 1, "the fallback is logged once")
			assert.Contains(t, warnings[0].Message, "duplicate")
			assert.Equal(t, []int64{-1}, producerIDsOf(t, b, kafkatest.ResultsTopic, 1))
		})
		t.Run(name+"/on", func(t *testing.T) {
			t.Parallel()
			b := start(t)
			cfg := brokerConfig(b, "")
			cfg.Idempotence = kafka.IdempotenceOn
			producer := newProducer(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			err := deliverOne(ctx, producer, cfg, "run-refused")
			require.Error(t, err)
			assert.Contains(t, err.Error(), "idempotent producer required")
			assert.False(t, producer.Idempotent())
		})
	}
}

// A produce request that the broker wrote but answered REQUEST_TIMED_OUT
// (as a broker does when replication is slow) is retried by sarama; the
// idempotent producer's retry carries the same sequence number, so the
// broker does not write the result twice. A plain producer, for contrast,
// does.
func TestIdempotentProducerRetryDoesNotDuplicate(t *testing.T) {
	t.Parallel()
	for _, mode := range []kafka.Idempotence{kafka.IdempotenceAuto, kafka.IdempotenceOff} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			b := kafkatest.Start(t)
			cfg := brokerConfig(b, "")
			cfg.Idempotence = mode
			producer := newProducer(t, cfg)
			// Connect first, so that the fault below meets the result's request.
			require.NoError(t, deliverOne(waitContext(t), producer, cfg, "run-first"))
			fault := b.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: kafkatest.ResultsTopic, Err: kerr.RequestTimedOut})
			defer fault.Remove()
			require.NoError(t, deliverOne(waitContext(t), producer, cfg, "run-retried"))
			require.Equal(t, 1, fault.Hits(), "the fault met the result's request")

			results := b.Results(t)
			require.NoError(t, results.CatchUp(waitContext(t)), "read everything the topic holds")
			require.Equal(t, 2, results.Unique())
			if mode == kafka.IdempotenceOff {
				assert.Equal(t, 1, results.Duplicates(), "a plain producer's retry writes the result again")
				return
			}
			assert.Zero(t, results.Duplicates(), "an idempotent producer's retry must not write the result twice")
		})
	}
}
