package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/pkg/executor"
)

func init() { roles["raw-kafka"] = rawKafka }

// The settings the executor's Kafka adapter uses (internal/adapters/kafka,
// config.go), which the raw baseline copies so that the comparison is
// between the executors and not between client settings.
const (
	rawKafkaFetchWait   = 20 * time.Millisecond  // Consumer.MaxWaitTime (Config.FetchMaxWait's default)
	rawKafkaCommitEvery = 250 * time.Millisecond // Consumer.Offsets.AutoCommit.Interval
)

// kafkaSettingsNote says what both sides of a Kafka comparison use.
const kafkaSettingsNote = "both sides: sarama, Kafka 2.8, separate producer and consumer clients, acks=all, no flush delay (Flush.Frequency 0), fetch wait 20 ms, offsets committed every 250 ms after the result is acknowledged"

// rawKafka is the Kafka baseline: a bare sarama consumer group reading the
// tasks topic, computing calculate-tax, producing the result record the
// executor would (same fields, same size, same topic and key, acks=all)
// and marking the task's offset once the result is acknowledged. There is
// no pool, no queue and no deduplication. It prints "ready" once it is in
// its group, and "mallocs N" (runtime.MemStats.Mallocs) at each SIGUSR1.
//
// Flags: -brokers, -group, -executor-id (the id results carry).
func rawKafka(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("raw-kafka", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "bootstrap servers, comma-separated")
	group := fs.String("group", "", "consumer group")
	executorID := fs.String("executor-id", "", "executor id results carry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addrs := strings.Split(*brokers, ",")
	// Producer and consumer each get a client of their own: sharing one
	// makes every message wait about a second on this machine.
	producer, err := sarama.NewAsyncProducer(addrs, rawProducerConfig())
	if err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	consumer, err := sarama.NewConsumerGroup(addrs, *group, rawConsumerConfig())
	if err != nil {
		producer.Close()
		return fmt.Errorf("consumer group: %w", err)
	}
	h := &rawKafkaHandler{producer: producer, executorID: *executorID, joined: make(chan struct{})}
	var background sync.WaitGroup
	background.Go(func() { h.markAcknowledged() })
	background.Go(func() {
		for err := range producer.Errors() {
			fmt.Fprintf(os.Stderr, "raw-kafka: produce: %v\n", err)
		}
	})
	background.Go(func() {
		for err := range consumer.Errors() {
			fmt.Fprintf(os.Stderr, "raw-kafka: consume: %v\n", err)
		}
	})
	consumed := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := consumer.Consume(ctx, []string{kafka.DefaultTasksTopic}, h); err != nil && ctx.Err() == nil {
				consumed <- err
				return
			}
		}
		consumed <- nil
	}()
	var runErr error
	select {
	case <-h.joined:
		fmt.Fprintln(stdout, "ready")
		runErr = serveMallocs(ctx, stdout, consumed)
	case runErr = <-consumed:
	}
	runErr = errors.Join(runErr, consumer.Close())
	producer.AsyncClose()
	background.Wait()
	return runErr
}

// serveMallocs prints "mallocs N" at each SIGUSR1 until ctx ends or
// consumed delivers the consume loop's end.
func serveMallocs(ctx context.Context, stdout io.Writer, consumed <-chan error) error {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case <-usr1:
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Fprintln(stdout, "mallocs", m.Mallocs)
		case err := <-consumed:
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

// rawProducerConfig is the executor's producer configuration.
func rawProducerConfig() *sarama.Config {
	sc := sarama.NewConfig()
	sc.ClientID = "bench-raw-producer"
	sc.Version = sarama.V2_8_0_0
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	// Any flush frequency would be added to every result's latency.
	sc.Producer.Flush.Frequency = 0
	sc.Producer.Flush.Messages = 0
	sc.Producer.Flush.Bytes = 0
	sc.Producer.Retry.Max = 5
	sc.Producer.Retry.Backoff = 100 * time.Millisecond
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Producer.MaxMessageBytes = kafka.DefaultMaxMessageBytes
	// Idempotent, as the executor's producer is by default
	// (GAMELAN_EXECUTOR_KAFKA_IDEMPOTENT=auto against kfake), so that the
	// baseline keeps the same durability and pays the same price: one
	// request in flight per connection.
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	return sc
}

// rawConsumerConfig is the executor's consumer configuration.
func rawConsumerConfig() *sarama.Config {
	sc := sarama.NewConfig()
	sc.ClientID = "bench-raw-consumer"
	sc.Version = sarama.V2_8_0_0
	sc.Metadata.AllowAutoTopicCreation = false
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = rawKafkaCommitEvery
	sc.Consumer.MaxWaitTime = rawKafkaFetchWait
	sc.Consumer.Fetch.Max = kafka.DefaultMaxMessageBytes * 4
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRoundRobin()}
	sc.Consumer.Group.Session.Timeout = 10 * time.Second
	sc.Consumer.Group.Heartbeat.Interval = 3 * time.Second
	sc.Consumer.Return.Errors = true
	return sc
}

// rawKafkaHandler consumes the claims of a session and produces results.
type rawKafkaHandler struct {
	producer   sarama.AsyncProducer
	executorID string
	joinOnce   sync.Once
	joined     chan struct{}
}

// rawPending is what a produced result carries to its acknowledgement: the
// task's message, whose offset is then marked.
type rawPending struct {
	session sarama.ConsumerGroupSession
	task    *sarama.ConsumerMessage
}

// Setup implements sarama.ConsumerGroupHandler.
func (h *rawKafkaHandler) Setup(sarama.ConsumerGroupSession) error {
	h.joinOnce.Do(func() { close(h.joined) })
	return nil
}

// Cleanup implements sarama.ConsumerGroupHandler.
func (h *rawKafkaHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim answers each task of the partition as soon as it is read.
func (h *rawKafkaHandler) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		value, runID, err := h.answer(msg.Value)
		if err != nil {
			fmt.Fprintf(os.Stderr, "raw-kafka: offset %d: %v\n", msg.Offset, err)
			session.MarkMessage(msg, "")
			continue
		}
		h.producer.Input() <- &sarama.ProducerMessage{
			Topic: kafka.DefaultResultsTopic, Key: sarama.StringEncoder(runID), Value: sarama.ByteEncoder(value),
			Metadata: rawPending{session: session, task: msg},
		}
	}
	return nil
}

// markAcknowledged marks each task's offset once its result is
// acknowledged, as the executor commits only after acknowledgement.
func (h *rawKafkaHandler) markAcknowledged() {
	for msg := range h.producer.Successes() {
		p := msg.Metadata.(rawPending)
		p.session.MarkMessage(p.task, "")
	}
}

// answer computes calculate-tax for a task record (examples.CalculateTax's
// arithmetic) and encodes the result record the executor would write.
func (h *rawKafkaHandler) answer(value []byte) ([]byte, string, error) {
	started := time.Now()
	var task kafka.TaskMessage
	if err := json.Unmarshal(value, &task); err != nil {
		return nil, "", err
	}
	amount, err := executor.Number(task.Context, "amount")
	if err != nil {
		return nil, "", err
	}
	key := task.RunID + ":" + task.NodeID + ":" + strconv.Itoa(task.Attempt)
	result, err := json.Marshal(kafka.ResultMessage{
		RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt, Status: "COMPLETED",
		Output: map[string]any{"amount": amount, "tax": amount * 0.1}, ExecutionToken: task.Token,
		CompletedAt: time.Now().UTC(), TaskID: key, ExecutorID: h.executorID,
		DurationMs: time.Since(started).Milliseconds(),
	})
	return result, task.RunID, err
}
