package kafkatest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
)

// TaskKey returns the key the engine deduplicates a task on,
// "runId:nodeId:attempt", the ResultKey of its results.
func TaskKey(m kafka.TaskMessage) string {
	return domain.IdempotencyKey(m.RunID, m.NodeID, m.Attempt)
}

// BulkProducer writes many task records fast, as an engine under load
// does: acks=all, no linger, snappy as Gamelan, keyed by run id, many in
// flight at once (Produce waits for each record). It remembers the
// partition of every record the broker acknowledged. Create it with
// Broker.BulkProducer.
type BulkProducer struct {
	producer *kafkaengine.Producer

	mu         sync.Mutex
	partitions map[string]int32 // TaskKey -> partition, once acknowledged
	err        error            // the first failed produce
}

// BulkProducer returns a producer of tasks to TasksTopic, closed with t.
func (b *Broker) BulkProducer(t testing.TB) *BulkProducer {
	t.Helper()
	producer, err := kafkaengine.NewProducer(b.ClientOptions(), kgo.SnappyCompression(), kgo.NoCompression())
	if err != nil {
		t.Fatalf("kafkatest: bulk producer: %v", err)
	}
	t.Cleanup(producer.Close)
	return &BulkProducer{producer: producer, partitions: make(map[string]int32)}
}

// Produce sends msg to TasksTopic without waiting; Flush waits.
func (p *BulkProducer) Produce(ctx context.Context, msg kafka.TaskMessage) {
	value, err := json.Marshal(msg)
	if err != nil {
		panic(err) // a TaskMessage always encodes
	}
	key := TaskKey(msg)
	p.producer.ProduceAsync(ctx, &kgo.Record{Topic: TasksTopic, Key: []byte(msg.RunID), Value: value},
		func(rec *kgo.Record, err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				if p.err == nil {
					p.err = fmt.Errorf("kafkatest: produce %s: %w", key, err)
				}
				return
			}
			p.partitions[key] = rec.Partition
		})
}

// Flush waits until every record produced so far is acknowledged, and
// returns the first produce that failed, if any.
func (p *BulkProducer) Flush(ctx context.Context) error {
	if err := p.producer.Flush(ctx); err != nil {
		return fmt.Errorf("kafkatest: flush the task producer: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Acknowledged returns how many distinct tasks the broker acknowledged.
func (p *BulkProducer) Acknowledged() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.partitions)
}

// Partition returns the partition the task of key (TaskKey) was written to.
func (p *BulkProducer) Partition(key string) (int32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	partition, ok := p.partitions[key]
	return partition, ok
}
