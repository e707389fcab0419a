package component

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// The Kafka executor ids of the service started by kafkaEnv: NAME-type,
// one logical id shared by every replica.
const (
	kafkaTaxExecutorID     = "executor-calculate-tax"
	kafkaPaymentExecutorID = "executor-payment-processor"
	// kafkaGroup is the consumer group: GAMELAN_EXECUTOR_NAME by default.
	kafkaGroup = "executor"
)

// kafkaEnv serves payment-processor and calculate-tax over the Kafka
// transport of broker, registering over Kafka too, at info level so that a
// load stays quiet.
func kafkaEnv(broker *kafkatest.Broker) map[string]string {
	vars := baseEnv()
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "info"
	vars["GAMELAN_EXECUTOR_TRANSPORT"] = "kafka"
	vars["GAMELAN_EXECUTOR_REGISTRAR"] = "kafka"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor,calculate-tax"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka"
	return vars
}

// startKafkaService runs the real service through service.Run with vars and
// waits until it is the one member of its stable consumer group.
func startKafkaService(t *testing.T, broker *kafkatest.Broker, vars map[string]string) *running {
	t.Helper()
	r := startService(t, vars)
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 1), "logs:\n%s", r.logs.text())
	return r
}

// kafkaTaxTask is the i-th calculate-tax task of run runID in Gamelan's
// shape. Even tasks name their type in context.__node_type__, odd ones
// name the executor id in targetExecutor, as the Gamelan engine does.
func kafkaTaxTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("tax-%05d", i)
	msg := kafka.TaskMessage{
		RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context: map[string]any{"amount": taxAmountValue(i)},
	}
	if i%2 == 0 {
		msg.Context["__node_type__"] = "calculate-tax"
	} else {
		msg.TargetExecutor = kafkaTaxExecutorID
	}
	return msg
}

// taxAmountValue is taxAmount as a number.
func taxAmountValue(i int) float64 { return float64(i)*1.25 + 0.37 }

// kafkaPaymentTask is the i-th payment-processor task of run runID in
// Gamelan's shape; targetExecutor names the executor id for even tasks and
// the executor type for odd ones.
func kafkaPaymentTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("pay-%05d", i)
	msg := kafka.TaskMessage{
		RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context:        map[string]any{"totalAmount": paymentAmount(i), "customerId": fmt.Sprintf("cust-%05d", i)},
		TargetExecutor: kafkaPaymentExecutorID,
	}
	if i%2 == 1 {
		msg.TargetExecutor = "payment-processor"
	}
	return msg
}

// paymentAmount is the total amount of the i-th payment: above zero, with
// cents, different for every task.
func paymentAmount(i int) float64 { return 10 + float64(i)*0.01 }

// checkKafkaTaxResult asserts that res completed the calculate-tax task
// msg, echoing its identity.
func checkKafkaTaxResult(t *testing.T, res kafka.ResultMessage, msg kafka.TaskMessage) bool {
	t.Helper()
	amount := msg.Context["amount"].(float64)
	ok := assert.Equal(t, "COMPLETED", res.Status, "%s: error %+v", msg.NodeID, res.Error)
	ok = assert.Nil(t, res.Error, msg.NodeID) && ok
	ok = assert.Equal(t, amount*0.1, res.Output["tax"], "%s: tax of %v", msg.NodeID, amount) && ok
	ok = assert.Equal(t, amount, res.Output["amount"], "%s: amount", msg.NodeID) && ok
	return checkKafkaIdentity(t, res, msg, kafkaTaxExecutorID) && ok
}

// checkKafkaPaymentResult asserts that res completed the payment msg.
func checkKafkaPaymentResult(t *testing.T, res kafka.ResultMessage, msg kafka.TaskMessage) bool {
	t.Helper()
	ok := assert.Equal(t, "COMPLETED", res.Status, "%s: error %+v", msg.NodeID, res.Error)
	ok = assert.Nil(t, res.Error, msg.NodeID) && ok
	ok = assert.Equal(t, "COMPLETED", res.Output["status"], msg.NodeID) && ok
	txn, _ := res.Output["transactionId"].(string)
	ok = assert.Regexp(t, `^TXN-[0-9a-f-]{36}$`, txn, "%s: transactionId", msg.NodeID) && ok
	ok = assert.Equal(t, msg.Context["totalAmount"], res.Output["amount"], "%s: amount", msg.NodeID) && ok
	ok = assert.Equal(t, msg.Context["customerId"], res.Output["customerId"], "%s: customerId", msg.NodeID) && ok
	return checkKafkaIdentity(t, res, msg, kafkaPaymentExecutorID) && ok
}

// checkKafkaIdentity asserts that res echoes msg's run, node, attempt and
// token, names the executor, and has a completion time.
func checkKafkaIdentity(t *testing.T, res kafka.ResultMessage, msg kafka.TaskMessage, executorID string) bool {
	t.Helper()
	ok := assert.Equal(t, msg.RunID, res.RunID, msg.NodeID)
	ok = assert.Equal(t, msg.NodeID, res.NodeID) && ok
	ok = assert.Equal(t, msg.Attempt, res.Attempt, msg.NodeID) && ok
	ok = assert.Equal(t, msg.Token, res.ExecutionToken, msg.NodeID) && ok
	ok = assert.Equal(t, executorID, res.ExecutorID, msg.NodeID) && ok
	ok = assert.False(t, res.CompletedAt.IsZero(), "%s: completedAt", msg.NodeID) && ok
	return ok
}

// taskKey is the engine's deduplication key of a task.
func taskKey(msg kafka.TaskMessage) string {
	return fmt.Sprintf("%s:%s:%d", msg.RunID, msg.NodeID, msg.Attempt)
}

// bulkProducer writes many task records fast, as an engine under load
// does: a franz-go client of the test's own (kafkatest's Produce waits for
// each record), acks=all, snappy as Gamelan, records keyed by run id, many
// in flight at once. It remembers which tasks the broker acknowledged.
type bulkProducer struct {
	client *kgo.Client

	mu    sync.Mutex
	acked map[string]bool // task keys the broker acknowledged
	err   error           // the first failed produce
}

func newBulkProducer(t testing.TB, broker *kafkatest.Broker) *bulkProducer {
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
	return &bulkProducer{client: client, acked: make(map[string]bool)}
}

// produce sends msg to the tasks topic without waiting; flush waits.
func (p *bulkProducer) produce(ctx context.Context, msg kafka.TaskMessage) {
	value, err := json.Marshal(msg)
	if err != nil {
		panic(err) // a TaskMessage always encodes
	}
	key := taskKey(msg)
	p.client.Produce(ctx, &kgo.Record{Topic: kafkatest.TasksTopic, Key: []byte(msg.RunID), Value: value},
		func(_ *kgo.Record, err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if err != nil {
				if p.err == nil {
					p.err = fmt.Errorf("produce %s: %w", key, err)
				}
				return
			}
			p.acked[key] = true
		})
}

// flush waits until every record produced so far is acknowledged, and
// fails t if one was not.
func (p *bulkProducer) flush(t testing.TB, ctx context.Context) {
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
	return len(p.acked)
}

// resultTally reads the results topic from its start and counts results
// as the engine deduplicates them (first per runId:nodeId:attempt wins),
// decoding each record once however long the topic grows. It is used from
// the test's goroutine only.
type resultTally struct {
	reader    *kafkatest.Reader
	read      int // records decoded so far
	unique    map[string]kafka.ResultMessage
	malformed []string
}

func newResultTally(t testing.TB, broker *kafkatest.Broker) *resultTally {
	t.Helper()
	return &resultTally{
		reader: broker.NewReader(t, kafkatest.ResultsTopic),
		unique: make(map[string]kafka.ResultMessage),
	}
}

// add decodes the records not yet seen.
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
	}
	r.read = len(records)
}

// waitUnique waits until results for n distinct tasks have been read. It
// wakes on every fetched batch, never by polling.
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

// duplicates returns how many results repeat an earlier one's key.
func (r *resultTally) duplicates() int { return r.read - len(r.malformed) - len(r.unique) }

// waitForLagZero waits until the executor's group has committed every
// record of the tasks topic.
func waitForLagZero(t *testing.T, broker *kafkatest.Broker, d time.Duration) {
	t.Helper()
	require.NoError(t, broker.WaitForLag(deadline(t, d), kafkaGroup, kafkatest.TasksTopic, 0))
}

// catchUp waits until the tally has read every record the results topic
// holds now, so that a check of "no other result" sees everything written
// before it.
func (r *resultTally) catchUp(t *testing.T, broker *kafkatest.Broker) {
	t.Helper()
	written := topicRecords(t, broker, kafkatest.ResultsTopic)
	err := r.reader.WaitUntil(deadline(t, conditionTimeout), func(records []kafkatest.Record) bool {
		r.add(records)
		return int64(len(records)) >= written
	})
	require.NoError(t, err, "read the %d results written", written)
}

// topicRecords returns how many records topic holds now.
func topicRecords(t *testing.T, broker *kafkatest.Broker, topic string) int64 {
	t.Helper()
	cluster := broker.Cluster()
	require.NotNil(t, cluster, "broker closed")
	var written int64
	for _, p := range cluster.PartitionInfos(topic) {
		written += p.HighWatermark - p.LogStartOffset
	}
	return written
}
