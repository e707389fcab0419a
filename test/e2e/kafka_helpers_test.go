package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// kafkaGroup is the consumer group, and kafkaTaxExecutorID the logical
// executor id, that every process of one service shares (NAME "executor").
const (
	kafkaGroup         = "executor"
	kafkaTaxExecutorID = "executor-calculate-tax"
)

// kafkaEnv is the environment of one executor process serving
// calculate-tax over the Kafka transport of broker, registering over Kafka.
// Processes with the same NAME are replicas: one group, one executor id.
// Each process runs at most capacity tasks at once, queueing as many more,
// so that a process holds only part of the load at any moment.
func kafkaEnv(broker *kafkatest.Broker, instance string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_INSTANCE_ID":              instance,
		"GAMELAN_EXECUTOR_HTTP_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                "info",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "10",
		"GAMELAN_EXECUTOR_TRANSPORT":                "kafka",
		"GAMELAN_EXECUTOR_REGISTRAR":                "kafka",
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS":  strings.Join(broker.Addrs(), ","),
		"GAMELAN_EXECUTOR_ENABLED_TYPES":            "calculate-tax",
		"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":      "calculate-tax=kafka",
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE":         "8",
		"GAMELAN_EXECUTOR_QUEUE_SIZE":               "8",
	}
}

// taxTask is the i-th calculate-tax task of run runID in Gamelan's shape,
// addressed to the shared executor id.
func taxTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("tax-%05d", i)
	return kafka.TaskMessage{
		RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context:        map[string]any{"amount": float64(i)*1.25 + 0.37},
		TargetExecutor: kafkaTaxExecutorID,
	}
}

// taskKey is the engine's deduplication key of a task.
func taskKey(msg kafka.TaskMessage) string {
	return fmt.Sprintf("%s:%s:%d", msg.RunID, msg.NodeID, msg.Attempt)
}

// bulkProducer writes many task records fast, as an engine under load
// does: acks=all, snappy as Gamelan, keyed by run id, many in flight. It
// remembers the partition of every acknowledged record.
type bulkProducer struct {
	client *kgo.Client

	mu         sync.Mutex
	partitions map[string]int32 // task key -> partition, once acknowledged
	err        error
}

func newBulkProducer(t *testing.T, broker *kafkatest.Broker) *bulkProducer {
	t.Helper()
	opts := append(broker.ClientOptions(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.SnappyCompression(), kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	client, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	return &bulkProducer{client: client, partitions: make(map[string]int32)}
}

// produce sends msg to the tasks topic without waiting; flush waits.
func (p *bulkProducer) produce(ctx context.Context, msg kafka.TaskMessage) {
	value, err := json.Marshal(msg)
	if err != nil {
		panic(err) // a TaskMessage always encodes
	}
	key := taskKey(msg)
	p.client.Produce(ctx, &kgo.Record{Topic: kafkatest.TasksTopic, Key: []byte(msg.RunID), Value: value},
		func(rec *kgo.Record, err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				if p.err == nil {
					p.err = fmt.Errorf("produce %s: %w", key, err)
				}
				return
			}
			p.partitions[key] = rec.Partition
		})
}

// flush waits until every record produced so far is acknowledged.
func (p *bulkProducer) flush(t *testing.T, ctx context.Context) {
	t.Helper()
	require.NoError(t, p.client.Flush(ctx), "flush the task producer")
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NoError(t, p.err)
}

// acknowledged returns how many distinct tasks the broker acknowledged.
func (p *bulkProducer) acknowledged() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.partitions)
}

// partition returns the partition the task of key was written to.
func (p *bulkProducer) partition(key string) (int32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	partition, ok := p.partitions[key]
	return partition, ok
}

// resultTally reads the results topic from its start and counts results
// as the engine deduplicates them (first per runId:nodeId:attempt wins),
// decoding each record once. It is used from the test's goroutine only.
type resultTally struct {
	reader    *kafkatest.Reader
	read      int
	unique    map[string]kafka.ResultMessage
	counts    map[string]int
	malformed []string
}

func newResultTally(t *testing.T, broker *kafkatest.Broker) *resultTally {
	t.Helper()
	return &resultTally{
		reader: broker.NewReader(t, kafkatest.ResultsTopic),
		unique: make(map[string]kafka.ResultMessage), counts: make(map[string]int),
	}
}

func (r *resultTally) add(records []kafkatest.Record) {
	for _, rec := range records[r.read:] {
		var res kafka.ResultMessage
		if err := json.Unmarshal(rec.Value, &res); err != nil {
			r.malformed = append(r.malformed, fmt.Sprintf("%d@%d: %v: %q", rec.Partition, rec.Offset, err, rec.Value))
			continue
		}
		key := kafkatest.ResultKey(res)
		if _, seen := r.unique[key]; !seen {
			r.unique[key] = res
		}
		r.counts[key]++
	}
	r.read = len(records)
}

// waitUnique waits until results for n distinct tasks have been read,
// waking on every fetched batch.
func (r *resultTally) waitUnique(ctx context.Context, n int) error {
	err := r.reader.WaitUntil(ctx, func(records []kafkatest.Record) bool {
		r.add(records)
		return len(r.unique) >= n
	})
	if err != nil {
		return fmt.Errorf("%d of %d unique results (%d duplicates): %w", len(r.unique), n, r.duplicates(), err)
	}
	return nil
}

// catchUp waits until the tally has read every record the results topic
// holds now.
func (r *resultTally) catchUp(t *testing.T, ctx context.Context, broker *kafkatest.Broker) {
	t.Helper()
	cluster := broker.Cluster()
	require.NotNil(t, cluster, "broker closed")
	var written int64
	for _, p := range cluster.PartitionInfos(kafkatest.ResultsTopic) {
		written += p.HighWatermark - p.LogStartOffset
	}
	err := r.reader.WaitUntil(ctx, func(records []kafkatest.Record) bool {
		r.add(records)
		return int64(len(records)) >= written
	})
	require.NoError(t, err, "read the %d results written", written)
}

// duplicates returns how many results repeat an earlier one's key.
func (r *resultTally) duplicates() int { return r.read - len(r.malformed) - len(r.unique) }

// duplicatedKeys returns the keys answered more than once, sorted.
func (r *resultTally) duplicatedKeys() []string {
	var keys []string
	for key, n := range r.counts {
		if n > 1 {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	return keys
}

// deadline returns a context that ends after d or with the test.
func deadline(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
