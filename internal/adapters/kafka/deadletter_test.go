package kafka_test

import (
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The trace context the bad record carries, and its trace id.
const (
	dltTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	dltTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
)

// dltSetup is a source with dead-lettering on, on a one-partition cluster.
type dltSetup struct {
	b      *kafkatest.Broker
	group  string
	source *kafka.TaskSource
	in     *porttest.Intake
	logs   *logBook
}

// startDLT starts a cluster and a source writing to dlt (the harness's
// DeadLetterTopic when empty) with the given timeout (the default if 0).
func startDLT(t *testing.T, dlt string, timeout time.Duration, opts ...kafkatest.Option) dltSetup {
	t.Helper()
	b := kafkatest.Start(t, append([]kafkatest.Option{kafkatest.WithPartitions(1)}, opts...)...)
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	cfg.DeadLetterTopic = kafkatest.DeadLetterTopic
	if dlt != "" {
		cfg.DeadLetterTopic = dlt
	}
	cfg.DeadLetterTimeout = timeout
	logs := newLogBook(t)
	source := newSource(t, cfg, logs)
	return dltSetup{b: b, group: group, source: source, in: startSource(t, source, 4), logs: logs}
}

// produceBad writes a record no result can name, keyed "bad-key", with a
// header of its own, a trace context and a bearer token.
func (s dltSetup) produceBad(t *testing.T) {
	t.Helper()
	require.NoError(t, s.b.ProduceRaw(waitContext(t), kafkatest.TasksTopic, []byte("bad-key"), []byte("not json {"),
		kafkatest.Header{Key: "x-origin", Value: []byte("engine")}, kafkatest.Header{Key: "traceparent", Value: []byte(dltTraceParent)},
		kafkatest.Header{Key: "Authorization", Value: []byte("Bearer a-token")}),
		"produce the bad record")
}

// deadLetters returns the source's counts by reason.
func deadLetters(source *kafka.TaskSource) map[string]telemetry.DeadLetters {
	counts := map[string]telemetry.DeadLetters{}
	for _, c := range source.DeadLetters() {
		counts[c.Reason] = c
	}
	return counts
}

// A record no result can name, and a task whose result the runtime
// dead-lettered, are both copied to the dead-letter topic, value, key and
// headers unchanged plus the dlt-* headers, and committed after.
func TestDeadLetterTopicTakesUnaddressableRecordsAndUndeliverableResults(t *testing.T) {
	t.Parallel()
	s := startDLT(t, "", 0)
	dlt := s.b.NewReader(t, kafkatest.DeadLetterTopic)
	tasks := s.b.NewReader(t, kafkatest.TasksTopic)
	started := time.Now().UTC().Truncate(time.Second)

	s.produceBad(t)
	produceTask(t, s.b, task("doomed"))
	doomed := waitOffered(t, s.in, "doomed")["doomed"]
	doomed.Settle(fmt.Errorf("%w: the engine refused even its minimal FAILED form", domain.ErrUndeliverable))

	require.NoError(t, dlt.WaitFor(waitContext(t), 2))
	waitCommitted(t, s.b, s.group, 0, 2)
	require.NoError(t, tasks.WaitFor(waitContext(t), 2))
	originals := tasks.Records()
	// The two are written concurrently: find each by its class.
	byClass := map[string]kafkatest.Record{}
	for _, r := range dlt.Records() {
		byClass[r.Headers[kafka.HeaderDLTErrorClass]] = r
	}
	require.Len(t, dlt.Records(), 2, "one dead letter each, no more")
	require.Len(t, byClass, 2, "one dead letter of each class")

	bad := byClass[kafka.DeadLetterUnaddressable]
	assert.Equal(t, "bad-key", string(bad.Key))
	assert.Equal(t, "not json {", string(bad.Value), "the original value, bytes unchanged")
	assert.Equal(t, "engine", bad.Headers["x-origin"], "the original headers are kept")
	assert.NotContains(t, bad.Headers, "Authorization", "the engine's bearer token was copied")
	assert.Equal(t, dltTraceParent, bad.Headers["traceparent"])
	checkDLTHeaders(t, bad.Headers, 0, kafka.DeadLetterUnaddressable, started)
	assert.Equal(t, dltTraceID, bad.Headers[kafka.HeaderDLTTraceID])
	assert.NotEmpty(t, bad.Headers[kafka.HeaderDLTErrorMessage])

	undeliverable := byClass[kafka.DeadLetterUndeliverable]
	assert.Equal(t, originals[1].Value, undeliverable.Value, "the task record's value, bytes unchanged")
	assert.Equal(t, originals[1].Key, undeliverable.Key)
	checkDLTHeaders(t, undeliverable.Headers, 1, kafka.DeadLetterUndeliverable, started)
	assert.Contains(t, undeliverable.Headers[kafka.HeaderDLTErrorMessage], "refused even its minimal FAILED form")
	assert.NotContains(t, undeliverable.Headers, kafka.HeaderDLTTraceID, "the task had no trace context")

	counts := deadLetters(s.source)
	assert.Equal(t, telemetry.DeadLetters{Reason: kafka.DeadLetterUnaddressable, Written: 1}, counts[kafka.DeadLetterUnaddressable])
	assert.Equal(t, telemetry.DeadLetters{Reason: kafka.DeadLetterUndeliverable, Written: 1}, counts[kafka.DeadLetterUndeliverable])
	assert.Empty(t, s.logs.find("does not exist"), "the topic exists: no warning")
}

// checkDLTHeaders checks the headers that say where a record came from
// and why it was dead-lettered.
func checkDLTHeaders(t *testing.T, headers map[string]string, offset int64, class string, notBefore time.Time) {
	t.Helper()
	assert.Equal(t, kafkatest.TasksTopic, headers[kafka.HeaderDLTOriginalTopic])
	assert.Equal(t, "0", headers[kafka.HeaderDLTOriginalPartition])
	assert.Equal(t, strconv.FormatInt(offset, 10), headers[kafka.HeaderDLTOriginalOffset])
	assert.Equal(t, class, headers[kafka.HeaderDLTErrorClass])
	at, err := time.Parse(time.RFC3339, headers[kafka.HeaderDLTTime])
	if assert.NoError(t, err, "dlt-time is RFC 3339") {
		assert.False(t, at.Before(notBefore), "dlt-time %s is not before the test began (%s)", at, notBefore)
		assert.Equal(t, time.UTC, at.Location(), "dlt-time is in UTC")
	}
}

// While the dead-letter topic refuses writes, the record is retried and
// its offset (and every later one) stays uncommitted; once the topic takes
// it, it is written and committed.
func TestDeadLetterRetriedWhileTheTopicRefuses(t *testing.T) {
	t.Parallel()
	s := startDLT(t, "", time.Minute)
	fault := s.b.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: kafkatest.DeadLetterTopic,
		Err: kerr.NotEnoughReplicas, Count: -1})
	dlt := s.b.NewReader(t, kafkatest.DeadLetterTopic)

	s.produceBad(t)
	produceTask(t, s.b, task("good"))
	waitOffered(t, s.in, "good")["good"].Settle(nil)
	// sarama retries a produce 5 times itself: two failed sends of ours.
	require.NoError(t, fault.Wait(waitContext(t), 12), "the dead letter is retried")
	assert.Less(t, committed(t, s.b, s.group, 0), int64(1), "nothing committed past the record not yet dead-lettered")
	assert.Zero(t, dlt.Len())

	fault.Remove()
	require.NoError(t, dlt.WaitFor(waitContext(t), 1))
	waitCommitted(t, s.b, s.group, 0, 2)
	counts := deadLetters(s.source)[kafka.DeadLetterUnaddressable]
	assert.Equal(t, int64(1), counts.Written)
	assert.Zero(t, counts.Failed)
}

// A dead-letter topic that never takes the record (here: it does not
// exist) is warned of at start; the record is given up after the timeout,
// logged at error level, counted, and committed, so that its partition is
// not held back for ever.
func TestDeadLetterGivenUpAfterTheTimeout(t *testing.T) {
	t.Parallel()
	s := startDLT(t, "no-such-dlt", 2*time.Second)
	require.Eventually(t, func() bool { return len(s.logs.find("dead-letter topic does not exist")) == 1 },
		waitTimeout, 5*time.Millisecond, "the missing topic is warned of at start")
	warning := s.logs.find("dead-letter topic does not exist")[0]
	assert.Equal(t, slog.LevelWarn, warning.Level)
	assert.Contains(t, warning.Message, "GAMELAN_EXECUTOR_KAFKA_DEAD_LETTER_TOPIC")

	s.produceBad(t)
	produceTask(t, s.b, task("good"))
	waitOffered(t, s.in, "good")["good"].Settle(nil)
	// Read the commit before the failure count: a commit past the bad
	// record comes only after it was given up.
	before := committed(t, s.b, s.group, 0)
	if deadLetters(s.source)[kafka.DeadLetterUnaddressable].Failed == 0 {
		assert.Less(t, before, int64(1), "committed past the record before it was given up")
	}

	waitCommitted(t, s.b, s.group, 0, 2)
	counts := deadLetters(s.source)[kafka.DeadLetterUnaddressable]
	assert.Equal(t, int64(1), counts.Failed)
	assert.Zero(t, counts.Written)
	failures := s.logs.find("could not be dead-lettered")
	require.Len(t, failures, 1)
	assert.Equal(t, slog.LevelError, failures[0].Level)
	assert.Equal(t, "0", failures[0].Attrs["offset"])
	assert.Equal(t, kafka.DeadLetterUnaddressable, failures[0].Attrs["error_class"])
}

// With dead-lettering off (the adapter's default) nothing is written and
// the record is committed at once, as before.
func TestDeadLetterOff(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	in := startSource(t, source, 4)
	dlt := b.NewReader(t, kafkatest.DeadLetterTopic)
	require.NoError(t, b.ProduceRaw(waitContext(t), kafkatest.TasksTopic, []byte("bad-key"), []byte("not json {")))
	produceTask(t, b, task("good"))
	waitOffered(t, in, "good")["good"].Settle(nil)
	waitCommitted(t, b, group, 0, 2)
	require.NoError(t, dlt.CatchUp(waitContext(t)))
	assert.Zero(t, dlt.Len())
	assert.Nil(t, source.DeadLetters())
}
