package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Offsets, flow control, Stop and targetExecutor filtering of the
// TaskSource, each test against a broker of its own.

// TestOffsetCommittedOnlyAfterSettle: an offered task's offset is committed
// only once it is settled with nil. Three tasks on three partitions are
// offered; settling one commits that one's partition and leaves the others
// uncommitted although they were read earlier.
func TestOffsetCommittedOnlyAfterSettle(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	runs := make([]string, 3)
	for p := range runs {
		runs[p] = keyOnPartition(t, "run", int32(p), int32(b.Partitions()))
		produceTask(t, b, task(runs[p]))
	}
	in := startSource(t, source, 10)
	offered := waitOffered(t, in, runs...)
	lag, err := b.Lag(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	require.Equal(t, int64(3), lag, "lag with three tasks offered and none settled")

	require.True(t, offered[runs[0]].Settle(nil))
	waitCommitted(t, b, group, 0, 1)
	// The commit that carried partition 0 would have carried the others,
	// had they been marked: they were offered before it, and not settled.
	assert.Equal(t, int64(-1), committed(t, b, group, 1), "partition 1: committed before its task was settled")
	assert.Equal(t, int64(-1), committed(t, b, group, 2), "partition 2: committed before its task was settled")
	lag, err = b.Lag(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, int64(2), lag)

	require.True(t, offered[runs[1]].Settle(nil))
	require.True(t, offered[runs[2]].Settle(nil))
	waitLag(t, b, group, 0)
}

// TestOffsetCommitsHighestContiguousFinished: tasks of one partition are
// offered concurrently and settled out of order; the committed offset is
// the one after the highest settled task with no unsettled task before it.
func TestOffsetCommitsHighestContiguousFinished(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(2))
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	run := keyOnPartition(t, "ordered", 0, 2)
	for node := range 4 { // offsets 0..3 of partition 0
		msg := task(run)
		msg.NodeID = fmt.Sprintf("node-%d", node)
		produceTask(t, b, msg)
	}
	in := startSource(t, source, 10)
	waitIntake(t, in, "the four tasks of partition 0 offered together", func() bool { return len(in.Outstanding()) == 4 })
	byOffset := in.Offers() // one partition: offered in offset order
	for offset, o := range byOffset {
		require.Equal(t, fmt.Sprintf("node-%d", offset), o.Task.NodeID, "offer %d", offset)
	}

	byOffset[0].Settle(nil)
	waitCommitted(t, b, group, 0, 1)

	byOffset[2].Settle(nil)
	byOffset[3].Settle(nil)
	// A sentinel on partition 1, settled after offsets 2 and 3: once its
	// commit shows, any mark made on partition 0 before it shows too.
	sentinel := keyOnPartition(t, "sentinel", 1, 2)
	produceTask(t, b, task(sentinel))
	waitOffered(t, in, sentinel)[sentinel].Settle(nil)
	waitCommitted(t, b, group, 1, 1)
	assert.Equal(t, int64(1), committed(t, b, group, 0), "commit moved past unsettled offset 1")

	byOffset[1].Settle(nil)
	waitCommitted(t, b, group, 0, 4)
	waitLag(t, b, group, 0)
}

// TestSlowTaskDoesNotBlockItsPartition: while the first task of a partition
// stays unsettled, the tasks after it on the same partition are offered
// and settled; the partition commits past all of them only once the slow
// one is settled.
func TestSlowTaskDoesNotBlockItsPartition(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	in := startSource(t, source, 10)
	produceTask(t, b, task("slow"))
	slow := waitOffered(t, in, "slow")["slow"]

	var fast []string
	for i := range 5 {
		fast = append(fast, fmt.Sprintf("fast-%d", i))
		produceTask(t, b, task(fast[i]))
	}
	offered := waitOffered(t, in, fast...)
	for _, run := range fast {
		offered[run].Settle(nil)
	}
	require.False(t, slow.Settled())
	lag, err := b.Lag(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, int64(6), lag, "committed past the unsettled slow task")

	slow.Settle(nil)
	waitCommitted(t, b, group, 0, 6)
}

// TestHandedBackTaskRedelivered: a task settled with ErrHandedBack is not
// committed. While the source reads, it offers the task again; after Stop
// it leaves the task to the group, and a successor (or the same service
// restarted) in the same group receives it.
func TestHandedBackTaskRedelivered(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	logs := newLogBook(t)
	first := newSource(t, cfg, logs)
	in := startSource(t, first, 4)
	produceTask(t, b, task("handed-back"))
	offered := waitOffered(t, in, "handed-back")["handed-back"]

	require.True(t, offered.Settle(fmt.Errorf("%w: the runtime is busy", domain.ErrHandedBack)))
	waitIntake(t, in, "the handed-back task offered again", func() bool { return timesOffered(in, "handed-back") == 2 })
	again := in.Outstanding()[0]
	require.Equal(t, "handed-back", again.Task.RunID)
	lag, err := b.Lag(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	require.Equal(t, int64(1), lag, "a handed-back task was committed")

	// Handed back after Stop: left to the group.
	require.NoError(t, first.Stop(t.Context()))
	require.True(t, again.Settle(fmt.Errorf("%w: shutting down", domain.ErrHandedBack)))
	closing := time.Now()
	require.NoError(t, first.Close(t.Context()))
	// A handed-back task will not finish: Close does not wait for it
	// (the grace for tasks in flight is 5 s).
	assert.Less(t, time.Since(closing), 3*time.Second, "Close waited for a handed-back task")
	lag, err = b.Lag(group, kafkatest.TasksTopic)
	require.NoError(t, err)
	require.Equal(t, int64(1), lag, "Close committed a handed-back task")
	assert.Equal(t, 2, timesOffered(in, "handed-back"), "offered again after Stop")

	successor := newSource(t, cfg, logs)
	next := startSource(t, successor, 4)
	waitOffered(t, next, "handed-back")["handed-back"].Settle(nil)
	waitLag(t, b, group, 0)
}

// TestCloseLeavesUnsettledTasksToTheGroup: Settle is honoured until Close.
// Close does not wait for a task still unsettled (the grace a rebalance
// gives tasks in flight is for partitions moving, not for a source that is
// closed once the runtime has settled all it will); its Settle afterwards
// commits nothing, and a successor in the group receives it.
func TestCloseLeavesUnsettledTasksToTheGroup(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	logs := newLogBook(t)
	first := newSource(t, cfg, logs)
	in := startSource(t, first, 4)
	produceTask(t, b, task("settled"))
	settled := waitOffered(t, in, "settled")["settled"]
	produceTask(t, b, task("unsettled"))
	unsettled := waitOffered(t, in, "unsettled")["unsettled"]

	require.NoError(t, first.Stop(t.Context()))
	require.True(t, settled.Settle(nil), "settle after Stop")
	closing := time.Now()
	require.NoError(t, first.Close(t.Context()))
	assert.Less(t, time.Since(closing), 3*time.Second, "Close waited for an unsettled task (the rebalance grace is 5 s)")
	require.True(t, unsettled.Settle(nil), "settle after Close")
	waitCommitted(t, b, group, 0, 1) // settled: committed before Close returned
	assert.Equal(t, int64(1), committed(t, b, group, 0), "a Settle after Close committed")

	successor := newSource(t, cfg, logs)
	next := startSource(t, successor, 4)
	waitOffered(t, next, "unsettled")["unsettled"].Settle(nil)
	waitLag(t, b, group, 0)
	assert.Equal(t, 0, timesOffered(next, "settled"), "the successor received a task settled before Close")
}

// TestFlowControl: with room for three tasks and fifty waiting on four
// partitions, the source never holds more than three unsettled, never
// offers into a full intake (a pull source waits on AwaitCapacity), and
// all fifty arrive, once each, as they are settled.
func TestFlowControl(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	const capacity, n = 3, 50
	runs := make([]string, n)
	for i := range runs {
		runs[i] = fmt.Sprintf("flow-%02d", i)
		produceTask(t, b, task(runs[i]))
	}
	in := startSource(t, source, capacity)
	waitIntake(t, in, "the intake filled", func() bool { return len(in.Outstanding()) == capacity })

	// One at a time: each settle frees room for exactly one task, which
	// every partition's claim waiting for room then competes for.
	for settled := range n {
		waitIntake(t, in, fmt.Sprintf("a task to settle after %d settled", settled), func() bool { return len(in.Outstanding()) > 0 })
		require.True(t, in.Outstanding()[0].Settle(nil))
	}
	waitLag(t, b, group, 0)

	assert.Equal(t, capacity, in.MaxOutstanding(), "unsettled tasks held at once")
	for _, r := range in.Refusals() {
		assert.NotErrorIs(t, r.Err, domain.ErrOverloaded, "task of run %s offered while the intake was full", r.Task.RunID)
	}
	for _, run := range runs {
		assert.Equal(t, 1, timesOffered(in, run), "times the task of run %s was offered", run)
	}
}

// TestStopEndsOffersAndKeepsCommitting: once Stop returns the source makes
// no Offer, although tasks keep arriving on its partitions while it
// stops; tasks offered before Stop and settled after it are still
// committed, until Close. A successor in the group then receives exactly
// the tasks the stopped source did not take.
func TestStopEndsOffersAndKeepsCommitting(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := kafkatest.Start(t)
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	logs := newLogBook(t)
	first := newSource(t, cfg, logs)
	in := startSource(t, first, 1000)

	// Tasks arrive while the source stops, so that records are waiting in
	// its claims at the moment Stop ends reading.
	const n = 300
	var (
		producing sync.WaitGroup
		produced  = make(chan error, 1)
	)
	producing.Go(func() {
		for i := range n {
			if err := b.ProduceTask(ctx, task(fmt.Sprintf("stop-%03d", i))); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	})
	waitIntake(t, in, "some tasks offered", func() bool { return len(in.Offers()) >= 20 })
	require.NoError(t, first.Stop(ctx))
	attempts := in.Attempts()
	require.NoError(t, first.Stop(ctx), "Stop again")
	producing.Wait()
	require.NoError(t, <-produced)
	require.Less(t, attempts, n, "every task was offered before Stop: nothing left to show")

	// Settled after Stop: still committed.
	before := in.Offers()
	for _, o := range before {
		o.Settle(nil)
	}
	waitLag(t, b, group, int64(n-len(before)))
	require.NoError(t, first.Close(t.Context()))

	successor := newSource(t, cfg, logs)
	next := startSource(t, successor, 1000)
	waitIntake(t, next, "the successor to receive the rest", func() bool { return len(next.Offers()) >= n-len(before) })
	next.SettleAll(nil)
	waitLag(t, b, group, 0)

	assert.Equal(t, attempts, in.Attempts(), "Offer calls after Stop returned")
	taken := make(map[string]bool)
	for _, o := range before {
		taken[o.Task.RunID] = true
	}
	for _, o := range next.Offers() {
		assert.False(t, taken[o.Task.RunID], "task of run %s offered by both sources", o.Task.RunID)
	}
	assert.Len(t, next.Offers(), n-len(before), "tasks the successor received")
}

// TestTargetExecutor: a task whose targetExecutor names neither one of the
// service's executor ids nor one of its types is skipped and committed,
// never offered; one naming an executor id arrives with Task.ExecutorID
// set, one naming a type with Task.ExecutorType set, one naming no one as
// it is.
func TestTargetExecutor(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	logs := newLogBook(t)
	billing := domain.Registration{ExecutorID: "billing-calculate-tax", Descriptor: domain.Descriptor{Type: "calculate-tax"}}
	refunds := domain.Registration{ExecutorID: "billing-refund", Descriptor: domain.Descriptor{Type: "refund"}}
	source := newSource(t, brokerConfig(b, group), logs, billing, refunds)

	targets := map[string]string{ // run id: targetExecutor
		"for-someone-else":   "shipping-label-printer",
		"for-a-foreign-type": "print-label",
		"by-id":              "billing-calculate-tax",
		"by-type":            "refund",
		"untargeted":         "",
	}
	// One partition: the skipped tasks come first, so that the later ones
	// arriving bounds the check that the skipped ones never will.
	for _, run := range []string{"for-someone-else", "for-a-foreign-type", "by-id", "by-type", "untargeted"} {
		msg := task(run)
		msg.TargetExecutor = targets[run]
		produceTask(t, b, msg)
	}
	in := startSource(t, source, 10)
	offered := waitOffered(t, in, "by-id", "by-type", "untargeted")

	byID, byType, untargeted := offered["by-id"].Task, offered["by-type"].Task, offered["untargeted"].Task
	assert.Equal(t, "billing-calculate-tax", byID.ExecutorID)
	assert.Empty(t, byID.ExecutorType)
	// A type names that type's executor: a routing hint, not a declared type.
	assert.Equal(t, "billing-refund", byType.ExecutorID)
	assert.Empty(t, byType.ExecutorType)
	assert.Empty(t, untargeted.ExecutorID)
	assert.Empty(t, untargeted.ExecutorType)
	assert.Len(t, in.Offers(), 3, "tasks offered")
	assert.Empty(t, in.Refusals())

	for _, o := range offered {
		o.Settle(nil)
	}
	waitLag(t, b, group, 0)
	assert.Len(t, logs.find("task for another executor skipped"), 2)
}

// TestTaskFieldsDecoded: every field of a TaskMessage reaches the task,
// numbers of the context as float64 (a large integer that float64 cannot
// hold exactly does not fail the record).
func TestTaskFieldsDecoded(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	source := newSource(t, brokerConfig(b, porttest.UniqueID(t)), newLogBook(t))
	in := startSource(t, source, 4)
	value := `{"runId":"run-fields","nodeId":"tax","attempt":3,"token":"tok-1",` +
		`"context":{"amount":12.5,"count":3,"big":123456789012345678901234567890,"nested":{"list":[1,"two",{"x":true}]}},` +
		`"targetExecutor":"` + taxExecutorID + `","taskId":"task-7","nodeType":"calculate-tax","executorType":"tax-calculator",` +
		`"timeoutSeconds":90,"scheduledAt":"2026-01-01T00:00:00.123Z","idempotencyKey":"idem-7","unknownField":"ignored"}`
	require.NoError(t, b.Produce(waitContext(t), kafkatest.TasksTopic, "", []byte(value), nil), "produce a task without key, as Gamelan does")

	got := waitOffered(t, in, "run-fields")["run-fields"].Task
	assert.Equal(t, "tax", got.NodeID)
	assert.Equal(t, 3, got.Attempt)
	assert.Equal(t, "tok-1", got.ExecutionToken)
	assert.Equal(t, "task-7", got.TaskID)
	assert.Equal(t, "calculate-tax", got.NodeType)
	assert.Equal(t, "tax-calculator", got.ExecutorType)
	assert.Equal(t, taxExecutorID, got.ExecutorID)
	assert.Equal(t, "idem-7", got.IdempotencyKey)
	assert.Equal(t, 90*time.Second, got.Timeout)
	assert.Equal(t, int64(1767225600123), got.ScheduledAt.UnixMilli())
	assert.Equal(t, 12.5, got.Context["amount"])
	assert.Equal(t, 3.0, got.Context["count"])
	assert.InDelta(t, 1.2345678901234568e29, got.Context["big"], 1e15)
	assert.Equal(t, map[string]any{"list": []any{1.0, "two", map[string]any{"x": true}}}, got.Context["nested"])
}

// TestHealth: the source is unhealthy until it has joined its group, then
// healthy.
func TestHealth(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	source := newSource(t, brokerConfig(b, porttest.UniqueID(t)), newLogBook(t))
	require.Error(t, source.Healthy(), "healthy before Start")
	in := startSource(t, source, 4)
	produceTask(t, b, task("health"))
	waitOffered(t, in, "health")
	require.NoError(t, source.Healthy(), "healthy while consuming")
}

// TestNewTaskSourceNeedsGroup: a source without a group id is refused.
func TestNewTaskSourceNeedsGroup(t *testing.T) {
	t.Parallel()
	_, err := kafka.NewTaskSource(kafka.Config{Brokers: []string{"127.0.0.1:1"}}, nil, newLogBook(t).logger())
	require.Error(t, err)
	_, err = kafka.NewTaskSource(kafka.Config{GroupID: "g"}, nil, newLogBook(t).logger())
	require.Error(t, err, "no brokers")
	_, err = kafka.NewTaskSource(kafka.Config{Brokers: []string{"127.0.0.1:1"}, GroupID: "g", SASL: kafka.SASL{Mechanism: "GSSAPI", User: "u"}}, nil, newLogBook(t).logger())
	require.Error(t, err, "unsupported SASL mechanism")
}

// TestStartTwice: a source starts once.
func TestStartTwice(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	source := newSource(t, brokerConfig(b, porttest.UniqueID(t)), newLogBook(t))
	startSource(t, source, 1)
	require.Error(t, source.Start(context.Background(), porttest.NewIntake(1)))
}

// TestUnexpectedOfferErrorIsRetried: an Offer failing with an error the
// Intake contract does not name is retried (ports.Pull), not left
// uncommitted until the next rebalance.
func TestUnexpectedOfferErrorIsRetried(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	in := startSource(t, source, 4)
	in.RefuseNext(errors.New("runtime hiccup")) // before the task exists, so before its offer
	produceTask(t, b, task("hiccup"))

	offered := waitOffered(t, in, "hiccup")["hiccup"]
	require.Len(t, in.Refusals(), 1, "the failed offer")
	require.True(t, offered.Settle(nil))
	waitLag(t, b, group, 0)
}
