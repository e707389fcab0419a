package kafka_test

import (
	"fmt"
	"slices"
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

// stepTask returns task number index of run runID, named "step-<index>".
func stepTask(runID string, index int) kafka.TaskMessage {
	msg := task(runID)
	msg.NodeID = fmt.Sprintf("step-%d", index)
	return msg
}

// produceInterleaved writes perKey tasks of each key, interleaved (the
// first of every key, then the second of every key...), one at a time so
// that their offsets follow that order. With unkeyed, keys of odd rank are
// written without a record key, as the Gamelan engine writes tasks: their
// ordering key is then their run id (and the producer picks their
// partition, so the topic must have only one).
func produceInterleaved(t *testing.T, b *kafkatest.Broker, keys []string, perKey int, unkeyed bool) {
	t.Helper()
	for i := range perKey {
		for k, key := range keys {
			msg := stepTask(key, i)
			if !unkeyed || k%2 == 0 {
				produceTask(t, b, msg)
			} else {
				require.NoError(t, b.ProduceJSON(waitContext(t), kafkatest.TasksTopic, "", msg, nil))
			}
		}
	}
}

// orderedSource starts a source of cfg in mode feeding work.
func orderedSource(t *testing.T, cfg kafka.Config, mode kafka.Ordering, work *workIntake, logs *logBook) *kafka.TaskSource {
	t.Helper()
	cfg.Ordering = mode
	source := newSource(t, cfg, logs)
	require.NoError(t, source.Start(t.Context(), work), "Start")
	t.Cleanup(func() { _ = source.Stop(t.Context()) })
	return source
}

// TestOrderingInterleavedKeys: 8 keys x 40 tasks interleaved on one
// partition, run by a handler that takes 1-3 ms. In key mode no two tasks
// of a key overlap and each key's tasks start in offset order, while tasks
// of different keys do run together; in partition mode nothing overlaps
// and tasks start in offset order; unordered, tasks of one key overlap
// (which shows that the checks can fail).
func TestOrderingInterleavedKeys(t *testing.T) {
	t.Parallel()
	const perKey = 40
	keys := make([]string, 8)
	for k := range keys {
		keys[k] = fmt.Sprintf("key-%d", k)
	}
	for _, mode := range []kafka.Ordering{kafka.KeyOrder, kafka.PartitionOrder, kafka.Unordered} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			b := kafkatest.Start(t, kafkatest.WithPartitions(1))
			group := porttest.UniqueID(t)
			produceInterleaved(t, b, keys, perKey, true)
			work := newWorkIntake(16, randomDelay(time.Millisecond, 3*time.Millisecond))
			orderedSource(t, brokerConfig(b, group), mode, work, newLogBook(t))
			total := len(keys) * perKey
			require.NoError(t, work.waitUntil(waitContext(t), func() bool { return work.settled >= total }),
				"all %d tasks run", total)
			waitLag(t, b, group, 0)

			got := work.snapshot()
			require.Len(t, got.order, total, "each task ran once")
			inOrder := make([]int, perKey)
			for i := range inOrder {
				inOrder[i] = i
			}
			switch mode {
			case kafka.KeyOrder:
				assert.Zero(t, got.totalOverlaps(), "tasks of one key overlapped: %v", got.overlaps)
				for _, key := range keys {
					assert.Equal(t, inOrder, got.starts[key], "key %s started out of offset order", key)
				}
				assert.Greater(t, got.maxRunning, 1, "tasks of different keys never ran together")
			case kafka.PartitionOrder:
				assert.Equal(t, 1, got.maxRunning, "two tasks of the partition ran together")
				var offsetOrder []string
				for i := range perKey {
					for _, key := range keys {
						offsetOrder = append(offsetOrder, workKey(key, i))
					}
				}
				assert.Equal(t, offsetOrder, got.order, "tasks started out of offset order")
			case kafka.Unordered:
				assert.Positive(t, got.totalOverlaps(), "unordered, tasks of one key never overlapped")
			}
		})
	}
}

// TestKeyOrderHandedBackKeepsItsKey: a task the runtime hands back is
// offered again before the next task of its key, which waits until the
// handed-back one is settled; another key is not held up meanwhile.
func TestKeyOrderHandedBackKeepsItsKey(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	cfg.Ordering = kafka.KeyOrder
	in := startSource(t, newSource(t, cfg, newLogBook(t)), 8)
	produceTask(t, b, stepTask("run-a", 0))
	produceTask(t, b, stepTask("run-a", 1))
	produceTask(t, b, stepTask("run-b", 0))

	offered := waitOffered(t, in, "run-a", "run-b")
	require.Equal(t, "step-0", offered["run-a"].Task.NodeID)
	require.Equal(t, 1, timesOffered(in, "run-a"), "the second task of run-a was offered before the first was settled")

	require.True(t, offered["run-a"].Settle(fmt.Errorf("%w: the runtime is busy", domain.ErrHandedBack)))
	waitIntake(t, in, "the handed-back task offered again", func() bool { return timesOffered(in, "run-a") == 2 })
	again := in.Offers()[len(in.Offers())-1]
	require.Equal(t, "step-0", again.Task.NodeID, "a later task of the key passed the handed-back one")

	// Settling run-b's task releases nothing of run-a.
	require.True(t, offered["run-b"].Settle(nil))
	require.True(t, again.Settle(nil))
	waitIntake(t, in, "the next task of run-a", func() bool { return timesOffered(in, "run-a") == 3 })
	last := in.Offers()[len(in.Offers())-1]
	require.Equal(t, "step-1", last.Task.NodeID)
	require.True(t, last.Settle(nil))
	waitLag(t, b, group, 0)
}

// TestKeyOrderAcrossRebalance: a second source joins the group while the
// first has tasks in flight and more waiting for their keys. No task is
// lost, each owner runs each key's tasks in offset order (restarting
// from the last commit when a partition is handed over), and the
// committed offset never passes a task that has not finished.
func TestKeyOrderAcrossRebalance(t *testing.T) {
	t.Parallel()
	const (
		partitions = 2
		perKey     = 30
		holdFrom   = 40 // tasks of the first source after this many are held
	)
	b := kafkatest.Start(t, kafkatest.WithPartitions(partitions))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	logs := newLogBook(t)

	// Three keys on each partition, interleaved; offset i of a partition
	// is the i-th task produced to it.
	keysOf := make([][]string, partitions)
	byOffset := make([][]string, partitions)
	for p := range int32(partitions) {
		for k := range 3 {
			keysOf[p] = append(keysOf[p], keyOnPartition(t, fmt.Sprintf("p%d-k%d", p, k), p, partitions))
		}
		for i := range perKey {
			for _, key := range keysOf[p] {
				byOffset[p] = append(byOffset[p], workKey(key, i))
			}
		}
		produceInterleaved(t, b, keysOf[p], perKey, false)
	}

	// The first source's tasks after holdFrom are held until the group is
	// stable with both sources: they are in flight through the rebalance,
	// outliving the revoke grace, and are redelivered to the new owner.
	release := make(chan struct{})
	var holdMu sync.Mutex
	taken, held := 0, map[string]bool{}
	first := newWorkIntake(8, randomDelay(time.Millisecond, 3*time.Millisecond))
	first.hold = func(task domain.Task) <-chan struct{} {
		holdMu.Lock()
		defer holdMu.Unlock()
		taken++
		if taken <= holdFrom {
			return nil
		}
		held[workKey(task.RunID, stepIndex(task))] = true
		return release
	}
	second := newWorkIntake(8, randomDelay(time.Millisecond, 3*time.Millisecond))
	finished := func(key string) bool { return first.isFinished(key) || second.isFinished(key) }

	// Watch the commits: every offset below the committed one must be of a
	// finished task. The committed offset is read first: tasks only ever
	// become finished, so a task seen unfinished afterwards was unfinished
	// when its offset was committed.
	watchDone, watching := make(chan struct{}), make(chan struct{})
	var violations []string
	go func() {
		defer close(watching)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			offsets, err := b.CommittedOffsets(group, kafkatest.TasksTopic)
			if err != nil {
				violations = append(violations, err.Error())
				return
			}
			for p := range int32(partitions) {
				c, ok := offsets[p]
				if !ok {
					continue // nothing committed yet
				}
				for offset := int64(0); offset < c && offset < int64(len(byOffset[p])); offset++ {
					if !finished(byOffset[p][offset]) {
						violations = append(violations, fmt.Sprintf("partition %d committed at %d before offset %d (%s) finished", p, c, offset, byOffset[p][offset]))
					}
				}
			}
			select {
			case <-watchDone:
				return
			case <-tick.C:
			}
		}
	}()

	mode := kafka.KeyOrder
	orderedSource(t, cfg, mode, first, logs)
	require.NoError(t, first.waitUntil(waitContext(t), func() bool { return len(first.order) > holdFrom }),
		"the first source holds tasks")
	orderedSource(t, cfg, mode, second, logs)
	require.NoError(t, b.WaitGroupStable(waitContext(t), group, 2))
	close(release)

	all := append(slices.Clone(byOffset[0]), byOffset[1]...)
	require.Eventually(t, func() bool {
		for _, key := range all {
			if !finished(key) {
				return false
			}
		}
		return true
	}, waitTimeout, 5*time.Millisecond, "every task finished")
	for p := range int32(partitions) {
		waitCommitted(t, b, group, p, int64(len(byOffset[p])))
	}
	close(watchDone)
	<-watching
	assert.Empty(t, violations, "the committed offset passed an unfinished task")

	// Each owner's tasks of a key follow offset order: the next one, or a
	// restart from the last commit (not beyond where it was).
	for name, work := range map[string]*workIntake{"first": first, "second": second} {
		got := work.snapshot()
		for key, starts := range got.starts {
			for i := 1; i < len(starts); i++ {
				step := starts[i] - starts[i-1]
				assert.True(t, step == 1 || step <= 0, "%s source: key %s ran %d after %d (%v)", name, key, starts[i], starts[i-1], starts)
			}
		}
	}
	// Tasks of one key never overlap at one owner, save the first's held
	// tasks, which its claim let go when the revoke grace ran out.
	holdMu.Lock()
	nHeld := len(held)
	holdMu.Unlock()
	assert.Positive(t, nHeld, "no task was in flight at the rebalance")
	assert.Zero(t, second.snapshot().totalOverlaps(), "the second source overlapped tasks of a key")
	assert.NotEmpty(t, second.snapshot().order, "the second source took no task: there was no rebalance in the middle")
	assert.NotEmpty(t, logs.find("partition released with tasks in flight"), "the held tasks outlived the revoke grace")
}

// TestKeyOrderNoOfferAfterStop: a task waiting for its key is not offered
// after Stop, even when its predecessor is settled then; it stays
// uncommitted for the group.
func TestKeyOrderNoOfferAfterStop(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	cfg.Ordering = kafka.KeyOrder
	source := newSource(t, cfg, newLogBook(t))
	in := startSource(t, source, 8)
	produceTask(t, b, stepTask("run-a", 0))
	produceTask(t, b, stepTask("run-a", 1))
	produceTask(t, b, stepTask("run-b", 0))
	// run-b's task is offered once read, so run-a's second, read before
	// it, is waiting.
	first := waitOffered(t, in, "run-a", "run-b")["run-a"]

	require.NoError(t, source.Stop(t.Context()))
	require.True(t, first.Settle(nil))
	waitCommitted(t, b, group, 0, 1) // the first committed: its key was released
	assert.Equal(t, 1, timesOffered(in, "run-a"), "the waiting task was offered after Stop")
}
