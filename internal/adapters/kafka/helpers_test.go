package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The executor the sources under test serve, as the porttest TaskSource
// suite names it in its tasks (Task.ExecutorID and Task.ExecutorType).
const (
	taxExecutorID   = "tax-service-tax-calculator"
	taxExecutorType = "tax-calculator"
)

// waitTimeout bounds every wait for something that must happen. Joining a
// consumer group and, above all, a rebalance (noticed at the next group
// heartbeat, every 3 s) take seconds, so it is generous.
const waitTimeout = 20 * time.Second

// testContext returns a context that ends with the test or after a bound
// well beyond any single wait, whichever comes first.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitContext returns a context for one wait of at most waitTimeout.
func waitContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// taxRegistration is the executor the sources under test serve over Kafka.
func taxRegistration() domain.Registration {
	return domain.Registration{
		ExecutorID:        taxExecutorID,
		Descriptor:        domain.Descriptor{Type: taxExecutorType},
		CommunicationType: domain.CommunicationKafka,
	}
}

// brokerConfig returns the adapters' configuration for b, with the
// default topic names (the ones kafkatest creates) and group.
func brokerConfig(b *kafkatest.Broker, group string) kafka.Config {
	return kafka.Config{Brokers: b.Addrs(), GroupID: group}
}

// newProducer returns a producer for cfg, closed when the test ends.
func newProducer(t *testing.T, cfg kafka.Config) *kafka.Producer {
	t.Helper()
	producer, err := kafka.NewProducer(cfg)
	require.NoError(t, err, "NewProducer")
	t.Cleanup(func() {
		if err := producer.Close(); err != nil {
			t.Errorf("close producer: %v", err)
		}
	})
	return producer
}

// newSource returns an unstarted TaskSource for cfg serving executors (the
// tax executor if none are given). Its logs go to logs; it is closed when
// the test ends.
func newSource(t *testing.T, cfg kafka.Config, logs *logBook, executors ...domain.Registration) *kafka.TaskSource {
	t.Helper()
	if len(executors) == 0 {
		executors = []domain.Registration{taxRegistration()}
	}
	source, err := kafka.NewTaskSource(cfg, executors, logs.logger())
	require.NoError(t, err, "NewTaskSource")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := source.Close(ctx); err != nil {
			t.Errorf("close task source: %v", err)
		}
	})
	return source
}

// startSource starts source with a fresh Intake of the given capacity.
// Cleanups stop the source and settle what is left (nil: committed) before
// the source is closed.
func startSource(t *testing.T, source *kafka.TaskSource, capacity int) *porttest.Intake {
	t.Helper()
	in := porttest.NewIntake(capacity)
	require.NoError(t, source.Start(t.Context(), in), "Start")
	t.Cleanup(func() {
		if err := source.Stop(context.Background()); err != nil {
			t.Errorf("stop task source: %v", err)
		}
		in.SettleAll(nil)
	})
	return in
}

// waitIntake waits until cond holds for the intake, failing the test with
// what and the intake's state otherwise.
func waitIntake(t *testing.T, in *porttest.Intake, what string, cond func() bool) {
	t.Helper()
	if err := in.WaitUntil(waitContext(t), cond); err != nil {
		t.Fatalf("waited for %s: %v; %s", what, err, in)
	}
}

// waitOffered waits until a task of each run id was accepted by the
// intake, and returns the first accepted offer of each, by run id.
func waitOffered(t *testing.T, in *porttest.Intake, runIDs ...string) map[string]*porttest.Offered {
	t.Helper()
	var offered map[string]*porttest.Offered
	waitIntake(t, in, fmt.Sprintf("tasks of runs %v to be offered", runIDs), func() bool {
		offered = offersByRun(in)
		for _, id := range runIDs {
			if offered[id] == nil {
				return false
			}
		}
		return true
	})
	return offered
}

// offersByRun returns the first accepted offer of each run id.
func offersByRun(in *porttest.Intake) map[string]*porttest.Offered {
	byRun := make(map[string]*porttest.Offered)
	for _, o := range in.Offers() {
		if byRun[o.Task.RunID] == nil {
			byRun[o.Task.RunID] = o
		}
	}
	return byRun
}

// timesOffered returns how many times a task of runID was accepted.
func timesOffered(in *porttest.Intake, runID string) int {
	n := 0
	for _, o := range in.Offers() {
		if o.Task.RunID == runID {
			n++
		}
	}
	return n
}

// task returns a well-formed task message of run runID.
func task(runID string) kafka.TaskMessage {
	return kafka.TaskMessage{
		RunID:   runID,
		NodeID:  "calculate",
		Attempt: 1,
		Token:   "token-" + runID,
		Context: map[string]any{"amount": 100.5, "currency": "EUR"},
	}
}

// produceTask produces msg to the tasks topic, keyed by its run id.
func produceTask(t *testing.T, b *kafkatest.Broker, msg kafka.TaskMessage) {
	t.Helper()
	require.NoError(t, b.ProduceTask(waitContext(t), msg), "produce task of run %s", msg.RunID)
}

// waitLag waits until the group's lag on the tasks topic is want.
func waitLag(t *testing.T, b *kafkatest.Broker, group string, want int64) {
	t.Helper()
	require.NoError(t, b.WaitForLag(waitContext(t), group, kafkatest.TasksTopic, want))
}

// committed returns the group's committed offset on one partition of the
// tasks topic, -1 when it has committed none there.
func committed(t *testing.T, b *kafkatest.Broker, group string, partition int32) int64 {
	t.Helper()
	offsets, err := b.CommittedOffsets(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	if offset, ok := offsets[partition]; ok {
		return offset
	}
	return -1
}

// waitCommitted waits until the group's committed offset on one partition
// of the tasks topic is want.
func waitCommitted(t *testing.T, b *kafkatest.Broker, group string, partition int32, want int64) {
	t.Helper()
	require.Eventually(t, func() bool { return committed(t, b, group, partition) == want },
		waitTimeout, 5*time.Millisecond, "committed offset of partition %d never became %d (last %d)",
		partition, want, committed(t, b, group, partition))
}

// keyOnPartition returns a run id (the record key of its task) that the
// harness's producer writes to partition of a topic with partitions
// partitions, so that a test can place tasks.
func keyOnPartition(t *testing.T, stem string, partition, partitions int32) string {
	t.Helper()
	partitioner := kgo.StickyKeyPartitioner(nil).ForTopic(kafkatest.TasksTopic)
	for i := range 10_000 {
		key := fmt.Sprintf("%s-%d", stem, i)
		if int32(partitioner.Partition(&kgo.Record{Key: []byte(key)}, int(partitions))) == partition {
			return key
		}
	}
	t.Fatalf("no key of stem %s lands on partition %d of %d", stem, partition, partitions)
	return ""
}

// taskMessage converts a domain task into the message an engine produces.
// NodeName and Configuration have no place in a TaskMessage.
func taskMessage(task domain.Task) kafka.TaskMessage {
	msg := kafka.TaskMessage{
		RunID:          task.RunID,
		NodeID:         task.NodeID,
		Attempt:        task.Attempt,
		Token:          task.ExecutionToken,
		Context:        task.Context,
		TargetExecutor: task.ExecutorID,
		TaskID:         task.TaskID,
		NodeType:       task.NodeType,
		ExecutorType:   task.ExecutorType,
		TimeoutSeconds: int64(task.Timeout / time.Second),
		IdempotencyKey: task.IdempotencyKey,
	}
	if !task.ScheduledAt.IsZero() {
		at := task.ScheduledAt
		msg.ScheduledAt = &at
	}
	return msg
}

// resultFromMessage converts a result read from the results topic back
// into a domain result, as an engine reads it.
func resultFromMessage(m kafka.ResultMessage) domain.Result {
	r := domain.Result{
		TaskID:         m.TaskID,
		RunID:          m.RunID,
		NodeID:         m.NodeID,
		Attempt:        m.Attempt,
		ExecutionToken: m.ExecutionToken,
		ExecutorID:     m.ExecutorID,
		Status:         domain.Status(m.Status),
		Output:         m.Output,
		CompletedAt:    m.CompletedAt,
		Duration:       time.Duration(m.DurationMs) * time.Millisecond,
	}
	if m.Error != nil {
		r.Error = &domain.ErrorInfo{
			Code:       m.Error.Code,
			Message:    m.Error.Message,
			StackTrace: m.StackTrace,
			Context:    m.Error.Context,
			Retryable:  m.Error.Retryable,
		}
	}
	return r
}

// registrationFromMessage converts a registration record back into a
// domain registration, as the reference engine reads it.
func registrationFromMessage(m kafka.RegistrationMessage) domain.Registration {
	return domain.Registration{
		ExecutorID: m.ExecutorID,
		Descriptor: domain.Descriptor{
			Type:               m.ExecutorType,
			MaxConcurrentTasks: m.MaxConcurrentTasks,
			SupportedNodeTypes: m.SupportedTypes,
		},
		CommunicationType: domain.CommunicationType(m.CommunicationType),
		Endpoint:          m.Endpoint,
		Metadata:          m.Metadata,
	}
}

// heartbeatFromMessage converts a heartbeat record back into a domain
// heartbeat.
func heartbeatFromMessage(m kafka.HeartbeatMessage) domain.Heartbeat {
	return domain.Heartbeat{
		ExecutorID:     m.ExecutorID,
		CurrentTasks:   m.CurrentTaskCount,
		CompletedTasks: m.Health.CompletedTasks,
		FailedTasks:    m.Health.FailedTasks,
		Status:         m.Health.Status,
		Load:           m.Health.Load,
	}
}

// resultsOf returns the results read so far whose run id is runID.
func resultsOf(reader *kafkatest.ResultReader, runID string) []kafka.ResultMessage {
	var out []kafka.ResultMessage
	for _, m := range reader.All() {
		if m.RunID == runID {
			out = append(out, m)
		}
	}
	return out
}

// logBook keeps what the adapters under test log, so that a test can check
// a log line (a skipped record names its offset) and a failed test shows
// the adapter's side of the story.
type logBook struct {
	mu      sync.Mutex
	entries []logEntry
}

// logEntry is one log record, its attributes rendered as strings.
type logEntry struct {
	Level   slog.Level
	Message string
	Attrs   map[string]string
}

// newLogBook returns an empty book whose entries are printed when t fails.
func newLogBook(t *testing.T) *logBook {
	book := &logBook{}
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range book.all() {
				t.Logf("adapter log: %s %s %v", e.Level, e.Message, e.Attrs)
			}
		}
	})
	return book
}

func (b *logBook) logger() *slog.Logger { return slog.New(logHandler{book: b}) }

func (b *logBook) all() []logEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.entries)
}

// find returns the entries whose message contains text.
func (b *logBook) find(text string) []logEntry {
	var out []logEntry
	for _, e := range b.all() {
		if strings.Contains(e.Message, text) {
			out = append(out, e)
		}
	}
	return out
}

// logHandler is the slog.Handler writing into a logBook, at every level.
type logHandler struct {
	book  *logBook
	attrs []slog.Attr
}

func (h logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h logHandler) Handle(_ context.Context, r slog.Record) error {
	e := logEntry{Level: r.Level, Message: r.Message, Attrs: make(map[string]string)}
	for _, a := range h.attrs {
		e.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		e.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.book.mu.Lock()
	defer h.book.mu.Unlock()
	h.book.entries = append(h.book.entries, e)
	return nil
}

func (h logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{book: h.book, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h logHandler) WithGroup(string) slog.Handler { return h }
