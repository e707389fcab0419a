package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// kafkaInFlight is how many tasks the engine side of the Kafka benchmarks
// keeps in flight: it produces a new task each time a result arrives
// (closed loop), so that latency is measured at a steady, bounded load
// rather than behind one backlog of b.N tasks. Both benchmarks use it.
const kafkaInFlight = 100

// kafkaBenchGroup is the consumer group of the service under benchmark
// (GAMELAN_EXECUTOR_NAME) and kafkaBenchExecutorID its calculate-tax
// executor id.
const (
	kafkaBenchGroup      = "bench"
	kafkaBenchExecutorID = "bench-calculate-tax"
)

// BenchmarkKafkaService measures calculate-tax over Kafka through the real
// service (service.Run: sarama consumer group, runtime, calculate-tax,
// sarama producer with acks=all, offsets committed after acknowledgement)
// against a kfake broker on 127.0.0.1: tasks/s, and the p50 and p99 of
// each task's latency from the engine producing it to the engine reading
// its result, with kafkaInFlight tasks in flight. The engine side is the
// same as BenchmarkRawSaramaRoundTrip's, so the two compare directly.
func BenchmarkKafkaService(b *testing.B) {
	broker := kafkatest.Start(b)
	vars := map[string]string{
		"GAMELAN_EXECUTOR_NAME":                    kafkaBenchGroup,
		"GAMELAN_EXECUTOR_HTTP_HOST":               "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":               "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":               "error",
		"GAMELAN_EXECUTOR_TRANSPORT":               "kafka",
		"GAMELAN_EXECUTOR_REGISTRAR":               "kafka",
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS": strings.Join(broker.Addrs(), ","),
		"GAMELAN_EXECUTOR_ENABLED_TYPES":           "calculate-tax",
		"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":     "calculate-tax=kafka",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.RunHosting(ctx, nil, func(k string) string { return vars[k] }, io.Discard, io.Discard, examples.All(examples.Config{}))
	}()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("service: %v", err)
		}
	})
	waitCtx, stopWaiting := context.WithTimeout(context.Background(), 30*time.Second)
	defer stopWaiting()
	if err := broker.WaitGroupStable(waitCtx, kafkaBenchGroup, 1); err != nil {
		b.Fatalf("the service never joined its group: %v", err)
	}
	runKafkaEngine(b, broker)
}

// BenchmarkRawSaramaRoundTrip is BenchmarkKafkaService's baseline, against
// the same kind of kfake broker in the same run, with the same engine side
// and the same message sizes, but with no executor in the middle: a bare
// sarama consumer (its own client, reading every partition of the tasks
// topic) hands each task to a bare sarama producer (its own client, acks=all,
// no flush delay, like the service's) that writes a result of the service's
// shape and size. Decoding the task's identity and encoding the result, the
// least any executor does, is all the work in between.
func BenchmarkRawSaramaRoundTrip(b *testing.B) {
	broker := kafkatest.Start(b)
	echo := startRawEcho(b, broker.Addrs())
	defer echo.stop(b)
	runKafkaEngine(b, broker)
}

// runKafkaEngine is the engine side of both benchmarks: it produces b.N
// calculate-tax tasks in Gamelan's shape (snappy, acks=all, keyed by run
// id) with a sarama producer, keeping kafkaInFlight of them unanswered at
// most, reads the results with a sarama consumer of its own, and reports
// tasks/s, p50_ms and p99_ms, and the sizes of a task and of a result
// (task_B, result_B) so that the two benchmarks can be seen to carry the
// same messages.
func runKafkaEngine(b *testing.B, broker *kafkatest.Broker) {
	b.Helper()
	producer := newEngineProducer(b, broker.Addrs())
	results := newResultConsumer(b, broker.Addrs())
	defer results.close()

	n := b.N
	sent := make([]atomic.Int64, n) // UnixNano when task i was handed to the producer
	latencies := make([]time.Duration, 0, n)
	window := make(chan struct{}, kafkaInFlight)
	answered := make([]bool, n)
	resultBytes := 0 // summed over the results counted, to show both benchmarks write results of one size
	finished := make(chan error, 1)

	b.ResetTimer()
	go func() {
		// The results: the first for each task counts; duplicates are
		// ignored, as the engine deduplicates.
		timeout := time.NewTimer(5 * time.Minute)
		defer timeout.Stop()
		for count := 0; count < n; {
			select {
			case msg := <-results.messages:
				now := time.Now()
				i, err := taskIndex(msg.Value)
				if err != nil {
					finished <- err
					return
				}
				if i >= n || answered[i] {
					continue
				}
				answered[i] = true
				resultBytes += len(msg.Value)
				latencies = append(latencies, now.Sub(time.Unix(0, sent[i].Load())))
				count++
				<-window
			case err := <-results.errors:
				finished <- err
				return
			case <-timeout.C:
				finished <- fmt.Errorf("%d of %d results after 5 minutes", count, n)
				return
			}
		}
		finished <- nil
	}()
	for i := range n {
		select {
		case window <- struct{}{}:
		case err := <-finished:
			b.Fatalf("after %d tasks produced: %v", i, err)
		}
		sent[i].Store(time.Now().UnixNano())
		producer.Input() <- &sarama.ProducerMessage{
			Topic: kafkatest.TasksTopic, Key: sarama.StringEncoder(benchRunID(i)), Value: sarama.ByteEncoder(benchTaskValue(i)),
		}
	}
	if err := <-finished; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()

	slices.Sort(latencies)
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(percentile(latencies, 0.50).Seconds()*1000, "p50_ms")
	b.ReportMetric(percentile(latencies, 0.99).Seconds()*1000, "p99_ms")
	b.ReportMetric(float64(resultBytes)/float64(n), "result_B")
	b.ReportMetric(float64(len(benchTaskValue(n-1))), "task_B")
}

// percentile returns the q-quantile of sorted (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// benchRunID spreads the tasks over 16 runs, and so over the partitions.
func benchRunID(i int) string { return "bench-run-" + strconv.Itoa(i%16) }

// benchNodeID names task i; taskIndex reads i back from a result.
func benchNodeID(i int) string { return fmt.Sprintf("n%08d", i) }

// benchTaskValue is task i as the Gamelan engine writes it.
func benchTaskValue(i int) []byte {
	value, err := json.Marshal(kafka.TaskMessage{
		RunID: benchRunID(i), NodeID: benchNodeID(i), Attempt: 1, Token: "exec-token-" + strconv.Itoa(i),
		Context:        map[string]any{"amount": 125.5, "currency": "EUR", "customerId": "cust-42"},
		TargetExecutor: kafkaBenchExecutorID,
	})
	if err != nil {
		panic(err) // a TaskMessage always encodes
	}
	return value
}

// taskIndex reads the task number back from a result's node id.
func taskIndex(value []byte) (int, error) {
	var res struct {
		NodeID string `json:"nodeId"`
	}
	if err := json.Unmarshal(value, &res); err != nil {
		return 0, fmt.Errorf("result %q: %w", value, err)
	}
	i, err := strconv.Atoi(strings.TrimPrefix(res.NodeID, "n"))
	if err != nil {
		return 0, fmt.Errorf("result of node %q: %w", res.NodeID, err)
	}
	return i, nil
}

// benchSaramaConfig is the sarama configuration of every client of the
// Kafka benchmarks, the service's choices: Kafka 2.8, no topic created by
// accident, acks=all and no flush delay for producers, 20ms fetch wait for
// consumers.
func benchSaramaConfig(clientID string) *sarama.Config {
	sc := sarama.NewConfig()
	sc.ClientID = clientID
	sc.Version = sarama.V2_8_0_0
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Flush.Frequency = 0
	sc.Producer.Flush.Messages = 0
	sc.Producer.Flush.Bytes = 0
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.MaxWaitTime = 20 * time.Millisecond
	sc.Consumer.Return.Errors = true
	return sc
}

// engineProducer is the engine's task producer: snappy, as Gamelan
// produces. Its acknowledgements are drained; a failure fails b.
type engineProducer struct {
	sarama.AsyncProducer
	drained sync.WaitGroup
}

func newEngineProducer(b *testing.B, addrs []string) *engineProducer {
	b.Helper()
	sc := benchSaramaConfig("bench-engine-producer")
	sc.Producer.Compression = sarama.CompressionSnappy
	async, err := sarama.NewAsyncProducer(addrs, sc)
	if err != nil {
		b.Fatalf("engine producer: %v", err)
	}
	p := &engineProducer{AsyncProducer: async}
	p.drained.Go(func() {
		for range async.Successes() {
		}
	})
	p.drained.Go(func() {
		for err := range async.Errors() {
			b.Errorf("produce task: %v", err)
		}
	})
	b.Cleanup(func() {
		async.AsyncClose()
		p.drained.Wait()
	})
	return p
}

// resultConsumer reads every partition of the results topic from its
// start with a sarama consumer of its own.
type resultConsumer struct {
	consumer   sarama.Consumer
	partitions []sarama.PartitionConsumer
	messages   chan *sarama.ConsumerMessage
	errors     chan error
	forwarding sync.WaitGroup
}

func newResultConsumer(b *testing.B, addrs []string) *resultConsumer {
	b.Helper()
	sc := benchSaramaConfig("bench-engine-consumer")
	sc.Consumer.MaxWaitTime = 10 * time.Millisecond
	consumer, err := sarama.NewConsumer(addrs, sc)
	if err != nil {
		b.Fatalf("result consumer: %v", err)
	}
	r := &resultConsumer{consumer: consumer, messages: make(chan *sarama.ConsumerMessage, 1024), errors: make(chan error, 1)}
	ids, err := consumer.Partitions(kafkatest.ResultsTopic)
	if err != nil {
		b.Fatalf("partitions of %s: %v", kafkatest.ResultsTopic, err)
	}
	for _, id := range ids {
		pc, err := consumer.ConsumePartition(kafkatest.ResultsTopic, id, sarama.OffsetOldest)
		if err != nil {
			b.Fatalf("consume %s/%d: %v", kafkatest.ResultsTopic, id, err)
		}
		r.partitions = append(r.partitions, pc)
		r.forwarding.Go(func() {
			for msg := range pc.Messages() {
				r.messages <- msg
			}
		})
		r.forwarding.Go(func() {
			for err := range pc.Errors() {
				select {
				case r.errors <- err:
				default:
				}
			}
		})
	}
	return r
}

// close stops reading. Forwarders blocked on a full messages channel are
// released by draining it.
func (r *resultConsumer) close() {
	for _, pc := range r.partitions {
		pc.AsyncClose()
	}
	stopped := make(chan struct{})
	go func() { r.forwarding.Wait(); close(stopped) }()
	for {
		select {
		case <-r.messages:
		case <-stopped:
			_ = r.consumer.Close()
			return
		}
	}
}

// rawEcho is the baseline's executor: a bare sarama consumer feeding a
// bare sarama producer.
type rawEcho struct {
	consumer  sarama.Consumer
	producer  sarama.AsyncProducer
	claims    []sarama.PartitionConsumer
	consuming sync.WaitGroup
	draining  sync.WaitGroup
}

func startRawEcho(b *testing.B, addrs []string) *rawEcho {
	b.Helper()
	consumer, err := sarama.NewConsumer(addrs, benchSaramaConfig("bench-echo-consumer"))
	if err != nil {
		b.Fatalf("echo consumer: %v", err)
	}
	producer, err := sarama.NewAsyncProducer(addrs, benchSaramaConfig("bench-echo-producer"))
	if err != nil {
		b.Fatalf("echo producer: %v", err)
	}
	e := &rawEcho{consumer: consumer, producer: producer}
	e.draining.Go(func() {
		for range producer.Successes() {
		}
	})
	e.draining.Go(func() {
		for err := range producer.Errors() {
			b.Errorf("echo produce: %v", err)
		}
	})
	ids, err := consumer.Partitions(kafkatest.TasksTopic)
	if err != nil {
		b.Fatalf("partitions of %s: %v", kafkatest.TasksTopic, err)
	}
	for _, id := range ids {
		pc, err := consumer.ConsumePartition(kafkatest.TasksTopic, id, sarama.OffsetOldest)
		if err != nil {
			b.Fatalf("consume %s/%d: %v", kafkatest.TasksTopic, id, err)
		}
		e.claims = append(e.claims, pc)
		e.consuming.Go(func() {
			for msg := range pc.Messages() {
				result, err := echoResult(msg.Value)
				if err != nil {
					b.Error(err)
					continue
				}
				producer.Input() <- &sarama.ProducerMessage{Topic: kafkatest.ResultsTopic, Key: sarama.ByteEncoder(msg.Key), Value: sarama.ByteEncoder(result)}
			}
		})
		e.consuming.Go(func() {
			for err := range pc.Errors() {
				b.Errorf("echo consume: %v", err)
			}
		})
	}
	return e
}

// echoResult answers a task as the service would, with a result of the
// same shape and size.
func echoResult(task []byte) ([]byte, error) {
	var msg kafka.TaskMessage
	if err := json.Unmarshal(task, &msg); err != nil {
		return nil, fmt.Errorf("task %q: %w", task, err)
	}
	return json.Marshal(kafka.ResultMessage{
		RunID: msg.RunID, NodeID: msg.NodeID, Attempt: msg.Attempt, Status: "COMPLETED",
		Output: map[string]any{"amount": 125.5, "tax": 12.55}, ExecutionToken: msg.Token,
		CompletedAt: time.Now().UTC(), TaskID: msg.RunID + ":" + msg.NodeID + ":" + strconv.Itoa(msg.Attempt),
		ExecutorID: kafkaBenchExecutorID,
	})
}

func (e *rawEcho) stop(b *testing.B) {
	b.Helper()
	for _, pc := range e.claims {
		pc.AsyncClose()
	}
	e.consuming.Wait()
	e.producer.AsyncClose()
	e.draining.Wait()
	if err := e.consumer.Close(); err != nil {
		b.Errorf("close echo consumer: %v", err)
	}
}
