package kafka_test

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
)

// BenchmarkProduceResults measures what idempotence costs the result
// producer: each operation delivers one result and waits for its
// acknowledgement (acks=all), from 8 goroutines per CPU at once, as the
// runtime's outbox does under load, against the embedded broker. The
// idempotent producer keeps one request in flight per connection (sarama
// requires it), the plain one up to five; compare the two in one run:
//
//	go test -run '^$' -bench ProduceResults -count 6 ./internal/adapters/kafka/ | benchstat -col /idempotence -
func BenchmarkProduceResults(b *testing.B) {
	for _, mode := range []kafka.Idempotence{kafka.IdempotenceOn, kafka.IdempotenceOff} {
		b.Run("idempotence="+string(mode), func(b *testing.B) {
			broker := kafkatest.Start(b)
			cfg := kafka.Config{Brokers: broker.Addrs(), Idempotence: mode}
			producer, err := kafka.NewProducer(cfg)
			require.NoError(b, err)
			b.Cleanup(func() { _ = producer.Close() })
			sink := kafka.NewResultSink(producer, cfg)
			ctx := b.Context()
			require.NoError(b, sink.Deliver(ctx, []domain.Result{{RunID: "warm-up", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}}))
			require.Equal(b, mode == kafka.IdempotenceOn, producer.Idempotent())

			var next atomic.Int64
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					run := "run-" + strconv.FormatInt(next.Add(1), 10)
					result := domain.Result{RunID: run, NodeID: "calculate", Attempt: 1, Status: domain.StatusCompleted,
						Output: map[string]any{"tax": 21.0}}
					if err := sink.Deliver(ctx, []domain.Result{result}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
