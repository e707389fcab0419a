package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// BenchmarkOrdering measures what each ordering mode costs in throughput:
// one partition holding 2,000 tasks over 100 keys (run ids), interleaved,
// a handler that takes 2 ms, and a runtime with room for 64 tasks. Each
// iteration is a fresh consumer group reading all 2,000 from the start.
// The figure is tasks/s from the first task's start to the last one's end
// (ns/op also counts joining the group); compare the modes of one run.
// work=0s runs the same without a handler delay: the source's own cost.
//
//	go test -run '^$' -bench BenchmarkOrdering -benchtime 3x -count 3 ./internal/adapters/kafka/
func BenchmarkOrdering(b *testing.B) {
	const (
		tasks    = 2000
		keys     = 100
		capacity = 64
		handler  = 2 * time.Millisecond
	)
	broker := kafkatest.Start(b, kafkatest.WithPartitions(1))
	producer := broker.BulkProducer(b)
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	for i := range tasks {
		producer.Produce(ctx, stepTask(fmt.Sprintf("key-%d", i%keys), i/keys))
	}
	if err := producer.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	// With no work at all the figure is the source's own cost per task.
	for _, work := range []time.Duration{handler, 0} {
		for _, mode := range []kafka.Ordering{kafka.PartitionOrder, kafka.KeyOrder, kafka.Unordered} {
			b.Run(fmt.Sprintf("work=%s/%s", work, mode), func(b *testing.B) {
				var spent time.Duration
				for i := 0; b.Loop(); i++ {
					spent += consumeAll(b, broker, mode, fmt.Sprintf("bench-%s-%d-%d", mode, time.Now().UnixNano(), i), tasks, capacity, work)
				}
				b.ReportMetric(float64(tasks*b.N)/spent.Seconds(), "tasks/s")
			})
		}
	}
}

// consumeAll runs every task of the topic through a fresh group in mode,
// and returns the time from the first task's start to the last one's end.
func consumeAll(b *testing.B, broker *kafkatest.Broker, mode kafka.Ordering, group string, tasks, capacity int, work time.Duration) time.Duration {
	b.Helper()
	cfg := kafka.Config{Brokers: broker.Addrs(), GroupID: group, Ordering: mode}
	source, err := kafka.NewTaskSource(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	in := newWorkIntake(capacity, func() time.Duration { return work })
	ctx, cancel := context.WithTimeout(b.Context(), 2*time.Minute)
	defer cancel()
	if err := source.Start(ctx, in); err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := source.Close(ctx); err != nil {
			b.Error(err)
		}
	}()
	if err := in.waitUntil(ctx, func() bool { return in.settled >= tasks }); err != nil {
		b.Fatalf("%s: %d of %d tasks run: %v", mode, in.settled, tasks, err)
	}
	return in.span()
}
