// Package broker holds the Kafka fault scenarios of issue 14: the executor
// service, run in process through service.RunHosting with its Kafka
// intake, against an embedded kfake cluster on 127.0.0.1 whose broker
// restarts, whose partition leaders move, whose consumer group rebalances
// while a long task runs, and whose network to the executor is partitioned,
// lossy or slow. Each scenario counts its tasks with
// testkit.Outcome: none may be lost; duplicates, the price of at-least-once
// delivery, are reported. A commit audit checks, at every offset commit the
// group sends, that nothing is committed before its result is on the
// results topic.
package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/test/testkit"
)

// group is the executor's consumer group: KAFKA_GROUP_ID is unset, so it is
// the service's NAME, whose default is "executor".
const group = "executor"

// taxExecutorID is the Kafka executor id of calculate-tax: NAME-type.
const taxExecutorID = "executor-calculate-tax"

// waitLimit bounds every wait for a condition. It is generous: the machine
// running the suite may be shared by many builds, and a wait that ends
// early is a failure, not a measurement.
const waitLimit = 90 * time.Second

// within returns a context that ends after d or with the test.
func within(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// memberEnv is the configuration of one replica of the service: Kafka for
// tasks, results and registrations, on broker's bootstrap servers, probes on
// a free port of 127.0.0.1, logs at info so that a load stays quiet.
func memberEnv(b *kafkatest.Broker, name string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_INSTANCE_ID":              name,
		"GAMELAN_EXECUTOR_HTTP_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                "info",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "20",
		"GAMELAN_EXECUTOR_TRANSPORT":                "kafka",
		"GAMELAN_EXECUTOR_REGISTRAR":                "kafka",
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS":  strings.Join(b.Addrs(), ","),
	}
}

// member is one replica of the service running in the test's process.
type member struct {
	name    string
	logs    *logLines
	baseURL string
	cancel  context.CancelFunc
	exited  chan struct{} // closed when RunHosting has returned
	result  error         // what RunHosting returned, once exited
}

// startMember runs the service as main does (service.RunHosting) with the
// hosted executor types and vars, and waits until its HTTP server listens.
// The test's cleanup stops it if the test did not.
func startMember(t *testing.T, name string, vars map[string]string, hosted ...executor.Executor) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{name: name, logs: newLogLines(), cancel: cancel, exited: make(chan struct{})}
	var stderr testkit.SyncBuffer
	getenv := func(key string) string { return vars[key] }
	go func() {
		defer close(m.exited)
		m.result = service.RunHosting(ctx, nil, getenv, m.logs, &stderr, hosted)
	}()
	t.Cleanup(func() {
		if err := m.stop(); err != nil {
			t.Logf("%s: %v", name, err)
		}
	})
	// The wait ends early if the service gives up starting.
	waitCtx, stopWaiting := context.WithCancelCause(within(t, waitLimit))
	defer stopWaiting(nil)
	go func() {
		select {
		case <-m.exited:
			stopWaiting(fmt.Errorf("%s exited: %v", name, m.result))
		case <-waitCtx.Done():
		}
	}()
	line, err := m.logs.waitFor(waitCtx, "http server listening")
	require.NoError(t, err, "%s; stderr: %s", name, stderr.String())
	m.baseURL = "http://" + line["addr"].(string)
	return m
}

// stop cancels the member's context, as SIGTERM does, and returns what
// RunHosting returned; it may be called again and returns the same.
func (m *member) stop() error {
	m.cancel()
	select {
	case <-m.exited:
		return m.result
	case <-time.After(waitLimit):
		return fmt.Errorf("%s did not stop within %s", m.name, waitLimit)
	}
}

// ready reports whether the member's readiness probe answers 200.
func (m *member) ready() bool {
	resp, err := http.Get(m.baseURL + "/q/health/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// logLines collects a member's JSON log lines and lets a test wait for one.
type logLines struct {
	mu      sync.Mutex
	partial []byte
	lines   []map[string]any
	raw     []string
	changed chan struct{} // closed and replaced on every new line
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

// Write implements io.Writer; it splits p into lines.
func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.raw = append(l.raw, line)
		var fields map[string]any
		if json.Unmarshal([]byte(line), &fields) == nil {
			l.lines = append(l.lines, fields)
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// waitFor returns the first line whose msg is msg, waiting until ctx ends.
func (l *logLines) waitFor(ctx context.Context, msg string) (map[string]any, error) {
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			if line["msg"] == msg {
				l.mu.Unlock()
				return line, nil
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("no log line %q: %w; logs:\n%s", msg, context.Cause(ctx), l.text())
		}
	}
}

// text returns every line logged so far.
func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

// startTaxMember starts a member hosting calculate-tax only.
func startTaxMember(t *testing.T, b *kafkatest.Broker, name string) *member {
	t.Helper()
	vars := memberEnv(b, name)
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka" // it declares gRPC
	return startMember(t, name, vars, examples.CalculateTax{})
}

// taxTask is the i-th calculate-tax task of run runID, in Gamelan's shape.
// Half name their type in context.__node_type__, half name the executor id
// in targetExecutor, as the Gamelan engine does.
func taxTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("tax-%05d", i)
	msg := kafka.TaskMessage{RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context: map[string]any{"amount": taxAmount(i)}}
	if i%2 == 0 {
		msg.Context["__node_type__"] = "calculate-tax"
	} else {
		msg.TargetExecutor = taxExecutorID
	}
	return msg
}

// taxAmount is the amount of the i-th tax task, different for every task.
func taxAmount(i int) float64 { return float64(i)*1.25 + 0.37 }

// taxLoad produces calculate-tax tasks through a BulkProducer and records
// each in an Outcome as it is handed over.
type taxLoad struct {
	producer *kafkatest.BulkProducer
	outcome  *testkit.Outcome
	tasks    map[string]kafka.TaskMessage
	produced int
}

func newTaxLoad(t *testing.T, b *kafkatest.Broker, o *testkit.Outcome) *taxLoad {
	return &taxLoad{producer: b.BulkProducer(t), outcome: o, tasks: make(map[string]kafka.TaskMessage)}
}

// produce hands n more tasks to the producer without waiting for the
// broker, spread over runs (so over partitions) by their run id.
func (l *taxLoad) produce(ctx context.Context, run string, n int) {
	for range n {
		msg := taxTask(fmt.Sprintf("%s-%02d", run, l.produced%24), l.produced)
		key := kafkatest.TaskKey(msg)
		l.tasks[key] = msg
		l.outcome.Submitted(key)
		l.producer.Produce(ctx, msg)
		l.produced++
	}
}

// flush waits until the broker acknowledged every task produced.
func (l *taxLoad) flush(t *testing.T, ctx context.Context) {
	t.Helper()
	require.NoError(t, l.producer.Flush(ctx))
	require.Equal(t, len(l.tasks), l.producer.Acknowledged(), "tasks acknowledged by the broker")
}

// countAnswers reads the results topic to its end and records every result
// record in o, so that a task answered twice counts a duplicate, and checks
// that each result of a task in tasks is a correct calculate-tax answer.
// A record is counted once however often the reader fetched it: a reader
// whose partition's leader moved may be reset and read records again, which
// says nothing of the executor (o.Notes["resultRecordsReadAgain"] counts
// those). It returns the keys answered more than once.
func countAnswers(t *testing.T, ctx context.Context, results *kafkatest.ResultReader, o *testkit.Outcome, tasks map[string]kafka.TaskMessage) []string {
	t.Helper()
	require.NoError(t, results.CatchUp(ctx))
	require.Empty(t, results.Malformed(), "records on the results topic that are not results")
	seen := make(map[position]bool)
	answers := make(map[string]int)
	wrong := 0
	for _, r := range results.Records() {
		if seen[position{r.Partition, r.Offset}] {
			continue
		}
		seen[position{r.Partition, r.Offset}] = true
		var res kafka.ResultMessage
		require.NoError(t, json.Unmarshal(r.Value, &res), "result %d@%d", r.Partition, r.Offset)
		key := kafkatest.ResultKey(res)
		o.Answer(key)
		answers[key]++
		msg, ok := tasks[key]
		if !ok || wrong >= 5 {
			continue
		}
		amount := msg.Context["amount"].(float64)
		if !assert.Equal(t, "COMPLETED", res.Status, "%s: error %+v", key, res.Error) ||
			!assert.Equal(t, amount*0.1, res.Output["tax"], "%s: tax of %v", key, amount) ||
			!assert.Equal(t, msg.Token, res.ExecutionToken, key) {
			wrong++
		}
	}
	if o.Notes == nil {
		o.Notes = make(map[string]any)
	}
	o.Notes["resultRecordsReadAgain"] = len(results.Records()) - len(seen)
	var duplicated []string
	for key, n := range answers {
		if n > 1 {
			duplicated = append(duplicated, key)
		}
	}
	slices.Sort(duplicated)
	return duplicated
}

// resultMark remembers where the results topic ended at a moment, so that
// the first result written after it can be waited for.
type resultMark struct {
	at   time.Time
	ends map[int32]int64
}

// markResults returns the end of every partition of the results topic now.
func markResults(t *testing.T, b *kafkatest.Broker) resultMark {
	t.Helper()
	m := resultMark{at: time.Now()}
	ends, err := endOffsets(b, kafkatest.ResultsTopic)
	require.NoError(t, err)
	m.ends = ends
	return m
}

// firstAfter waits until results has read a record written after the mark
// and returns the time from the mark to that read: how long the engine
// waited for the first new result.
func (m resultMark) firstAfter(ctx context.Context, results *kafkatest.ResultReader) (time.Duration, error) {
	err := results.WaitUntil(ctx, func(records []kafkatest.Record) bool {
		for i := len(records) - 1; i >= 0; i-- {
			if records[i].Offset >= m.ends[records[i].Partition] {
				return true
			}
		}
		return false
	})
	return time.Since(m.at), err
}

// endOffsets returns the high watermark of every partition of topic.
func endOffsets(b *kafkatest.Broker, topic string) (map[int32]int64, error) {
	ends := make(map[int32]int64)
	err := b.Inspect(func(c *kfake.Cluster) error {
		for _, p := range c.PartitionInfos(topic) {
			ends[p.Partition] = p.HighWatermark
		}
		return nil
	})
	return ends, err
}

// requireAllCommitted waits until the group has committed every record of
// the tasks topic, then checks that its committed offset of each partition
// is exactly the partition's end: nothing left uncommitted, nothing
// committed beyond what was written.
func requireAllCommitted(t *testing.T, ctx context.Context, b *kafkatest.Broker) map[int32]int64 {
	t.Helper()
	require.NoError(t, b.WaitForLag(ctx, group, kafkatest.TasksTopic, 0))
	committed, err := b.CommittedOffsets(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	ends, err := endOffsets(b, kafkatest.TasksTopic)
	require.NoError(t, err)
	for partition, end := range ends {
		if end == 0 {
			// A partition that never held a record may have no commit.
			assert.Zero(t, committed[partition], "partition %d: committed beyond an empty partition", partition)
			continue
		}
		assert.Equal(t, end, committed[partition], "partition %d: committed offset vs end of the tasks topic", partition)
	}
	return committed
}

// diagnose describes where the tasks and results stand, for the message of
// a wait that failed: the group's state, its committed offsets and the ends
// of both topics.
func diagnose(b *kafkatest.Broker) string {
	var text string
	err := b.Inspect(func(c *kfake.Cluster) error {
		state := "absent"
		var committed map[int32]kfake.GroupCommit
		if info := c.GroupInfo(group); info != nil {
			state = fmt.Sprintf("%s with %d members", info.State, len(info.Members))
			committed = info.Commits[kafkatest.TasksTopic]
		}
		text = fmt.Sprintf("group %s %s; tasks (committed/end):", group, state)
		for _, p := range c.PartitionInfos(kafkatest.TasksTopic) {
			text += fmt.Sprintf(" %d:%d/%d", p.Partition, committed[p.Partition].Offset, p.HighWatermark)
		}
		text += "; results end:"
		for _, p := range c.PartitionInfos(kafkatest.ResultsTopic) {
			text += fmt.Sprintf(" %d:%d", p.Partition, p.HighWatermark)
		}
		return nil
	})
	if err != nil {
		return err.Error()
	}
	return text
}
