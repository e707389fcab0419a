package kafka

import (
	"sync"

	"github.com/IBM/sarama"
)

// offsetTracker commits a partition's offsets only as far as every record
// before them is finished: records of one partition run concurrently and
// finish in any order, and the committed offset is the one after the
// highest finished record with no unfinished record before it. So a crash or
// a rebalance redelivers every unfinished record (and perhaps some finished
// ones after it: duplicates the runtime absorbs), and loses none. Gaps in
// offsets (compaction, transaction markers) are fine: records are tracked
// in the order they were read.
type offsetTracker struct {
	session   sarama.ConsumerGroupSession
	topic     string
	partition int32

	mu      sync.Mutex
	pending []int64        // offsets read and not yet committed, in order
	done    map[int64]bool // finished offsets among pending
	closed  bool           // the claim ended: marks no longer reach a commit
	empty   chan struct{}  // closed and replaced whenever pending empties
}

func newOffsetTracker(session sarama.ConsumerGroupSession, topic string, partition int32) *offsetTracker {
	return &offsetTracker{session: session, topic: topic, partition: partition, done: make(map[int64]bool), empty: make(chan struct{})}
}

// track records that offset was read and is not finished.
func (t *offsetTracker) track(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending = append(t.pending, offset)
}

// finish records that offset is finished (its result acknowledged, or it
// was skipped) and marks the highest committable offset.
func (t *offsetTracker) finish(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[offset] = true
	advanced := false
	for len(t.pending) > 0 && t.done[t.pending[0]] {
		delete(t.done, t.pending[0])
		next := t.pending[0] + 1
		t.pending = t.pending[1:]
		if !t.closed {
			t.session.MarkOffset(t.topic, t.partition, next, "")
		}
		advanced = true
	}
	if advanced && len(t.pending) == 0 {
		close(t.empty)
		t.empty = make(chan struct{})
	}
}

// outstanding returns how many offsets are unfinished, and a channel closed
// when that next reaches zero.
func (t *offsetTracker) outstanding() (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending), t.empty
}

// close stops marking: the claim has ended and its session's commits with it.
func (t *offsetTracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}
