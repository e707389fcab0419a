package kafka

import (
	"errors"
	"sync"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/domain"
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
	// inFlight counts records the runtime accepted and has not settled;
	// idle is closed and replaced whenever it drops to zero.
	inFlight int
	idle     chan struct{}
	// handedBack holds records the runtime gave back unstarted, for the
	// claim to offer again; redeliver has room for one signal that there
	// are some. It never holds more records than were in flight.
	handedBack []*sarama.ConsumerMessage
	redeliver  chan struct{}
	// committed is the offset the group resumes from: the last one marked,
	// or the claim's initial offset; negative while unknown (a group with
	// no commit starts from a sentinel, resolved by the first record read).
	committed int64
	// finished, when set, is told each offset finish records, outside the
	// lock: the claim's orderGate releases the next record of its key.
	finished func(offset int64)
}

// newOffsetTracker returns the tracker of a claim starting at initial (the
// claim's InitialOffset: the group's committed offset, or a sentinel).
func newOffsetTracker(session sarama.ConsumerGroupSession, topic string, partition int32, initial int64) *offsetTracker {
	return &offsetTracker{session: session, topic: topic, partition: partition, done: make(map[int64]bool),
		idle: make(chan struct{}), redeliver: make(chan struct{}, 1), committed: initial}
}

// committedOffset returns the offset the group would resume the partition
// from now, and false while it is unknown.
func (t *offsetTracker) committedOffset() (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.committed >= 0:
		return t.committed, true
	case len(t.pending) > 0:
		// Nothing committed yet: the group resumes where this claim began
		// to read, its first record.
		return t.pending[0], true
	default:
		return 0, false
	}
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
	t.finishOffset(offset)
	if t.finished != nil {
		t.finished(offset)
	}
}

func (t *offsetTracker) finishOffset(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done[offset] = true
	next := int64(-1)
	for len(t.pending) > 0 && t.done[t.pending[0]] {
		delete(t.done, t.pending[0])
		next = t.pending[0] + 1
		t.pending = t.pending[1:]
	}
	// Marking keeps only the highest offset: once is enough.
	if next >= 0 && !t.closed {
		t.session.MarkOffset(t.topic, t.partition, next, "")
		t.committed = next
	}
}

// begin records that the runtime is about to be offered a record; end
// takes it back if the offer is refused.
func (t *offsetTracker) begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inFlight++
}

// end records that a record offered with begin is no longer in flight.
func (t *offsetTracker) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.endLocked()
}

func (t *offsetTracker) endLocked() {
	t.inFlight--
	if t.inFlight == 0 {
		close(t.idle)
		t.idle = make(chan struct{})
	}
}

// settle records the runtime's verdict on an offered record: finished
// (err nil: its result acknowledged; or err wrapping
// domain.ErrUndeliverable: its result dead-lettered, and reading the record
// again would only fail again), or handed back to be offered again by the
// claim while it lasts (the record stays uncommitted until it is finished).
func (t *offsetTracker) settle(msg *sarama.ConsumerMessage, err error) {
	if err == nil || errors.Is(err, domain.ErrUndeliverable) {
		t.finish(msg.Offset)
		t.end()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.endLocked()
	if t.closed {
		return // the next owner of the partition reads it again
	}
	t.handedBack = append(t.handedBack, msg)
	select {
	case t.redeliver <- struct{}{}:
	default: // a signal is pending already
	}
}

// redeliveries returns a channel that receives when records were handed
// back; takeHandedBack returns them.
func (t *offsetTracker) redeliveries() <-chan struct{} { return t.redeliver }

func (t *offsetTracker) takeHandedBack() []*sarama.ConsumerMessage {
	t.mu.Lock()
	defer t.mu.Unlock()
	msgs := t.handedBack
	t.handedBack = nil
	return msgs
}

// outstanding returns how many records are in flight in the runtime, and a
// channel closed when that next reaches zero. Records refused or handed
// back are not in flight: they will not finish before the claim ends.
func (t *offsetTracker) outstanding() (int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight, t.idle
}

// close stops marking: the claim has ended and its session's commits with it.
func (t *offsetTracker) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
}
