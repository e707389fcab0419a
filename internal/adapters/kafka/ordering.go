package kafka

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
)

// Ordering is the order in which the TaskSource runs the tasks of one
// partition. Whatever the mode, offsets are committed by the same rule:
// only the contiguous run of finished records (offsetTracker).
type Ordering string

const (
	// Unordered runs the records of a partition concurrently, each offered
	// as soon as the runtime has room (the default, and the fastest).
	Unordered Ordering = "unordered"
	// KeyOrder runs the records of one ordering key one after another, in
	// offset order, and the records of different keys concurrently (the
	// "key order" of Confluent's parallel-consumer). The ordering key is the
	// record key; a record without one (the Gamelan engine sends none) is
	// ordered by its task's runId; a record with neither (undecodable) is
	// ordered after nothing and runs at once.
	KeyOrder Ordering = "key"
	// PartitionOrder runs at most one record of a partition at a time, in
	// offset order.
	PartitionOrder Ordering = "partition"
)

// validate accepts the three modes, and empty for Unordered.
func (o Ordering) validate() error {
	switch o {
	case "", Unordered, KeyOrder, PartitionOrder:
		return nil
	}
	return fmt.Errorf("kafka: ordering %q: must be unordered, key or partition", string(o))
}

// maxWaiting bounds the records a claim holds back, per partition, while
// they wait for the earlier record of their key to be settled: about four
// times sarama's own per-partition buffer (ChannelBufferSize, 256
// records), enough that a partition interleaving hundreds of keys keeps
// them all running, at a bounded cost in memory. Once it is
// reached the claim stops reading the partition until a record is released,
// so that sarama's buffers fill and fetching pauses, as they do when the
// runtime is full.
const maxWaiting = 1000

// orderGate holds back the records of a claim that must wait for an earlier
// record of the same ordering key. A key is "busy" from the moment one of
// its records is let through (admit, or released from the queue) until that
// record is finished (its result acknowledged or dead-lettered, or the
// record skipped): the offsetTracker calls release. A record the runtime
// hands back keeps its key busy, so it is offered again, through the
// tracker's redeliveries, before any later record of its key.
//
// The gate never offers anything itself: released records are queued as
// ready, and the claim's loop takes them, as it takes handed-back ones. So
// one key's Offer waiting for the runtime (room, a rate limit) never runs
// under the gate's lock, and a late Settle never blocks on an Offer.
//
// A nil *orderGate is the Unordered mode: every record passes at once.
type orderGate struct {
	// keyOf returns a record's ordering key, and false when it has none
	// (it then waits for nothing and nothing waits for it).
	keyOf func(*sarama.ConsumerMessage) (string, bool)

	mu sync.Mutex
	// queues holds, for each busy key, the records waiting behind the one
	// running, in offset order; a busy key with none waiting maps to an
	// empty queue.
	queues map[string][]*sarama.ConsumerMessage
	// busy maps the offset of each record let through to its key, so that
	// release, which knows only an offset, finds the key.
	busy    map[int64]string
	waiting int // records held in queues
	// ready holds released records for the claim to take; readyNote has
	// room for one signal that there are some.
	ready     []*sarama.ConsumerMessage
	readyNote chan struct{}
}

// newOrderGate returns the gate of one claim for mode, nil for Unordered.
func newOrderGate(mode Ordering) *orderGate {
	var keyOf func(*sarama.ConsumerMessage) (string, bool)
	switch mode {
	case KeyOrder:
		keyOf = recordOrderKey
	case PartitionOrder:
		// One key for the whole partition: one record at a time.
		keyOf = func(*sarama.ConsumerMessage) (string, bool) { return "", true }
	default:
		return nil
	}
	return &orderGate{keyOf: keyOf, queues: make(map[string][]*sarama.ConsumerMessage),
		busy: make(map[int64]string), readyNote: make(chan struct{}, 1)}
}

// recordOrderKey is the ordering key of KeyOrder: the record key, else the
// task's runId. Only the runId is decoded here (the record is decoded in
// full when it is taken), and only for records without a key.
func recordOrderKey(msg *sarama.ConsumerMessage) (string, bool) {
	if len(msg.Key) > 0 {
		return string(msg.Key), true
	}
	var ids struct {
		RunID string `json:"runId"`
	}
	if json.Unmarshal(msg.Value, &ids) != nil || ids.RunID == "" {
		return "", false
	}
	return ids.RunID, true
}

// admit reports whether msg, just read, may be taken now. If not, the gate
// keeps it until the earlier records of its key are finished, and hands it
// out through takeReady.
func (g *orderGate) admit(msg *sarama.ConsumerMessage) bool {
	if g == nil {
		return true
	}
	key, ok := g.keyOf(msg)
	if !ok {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if queue, busy := g.queues[key]; busy {
		g.queues[key] = append(queue, msg)
		g.waiting++
		return false
	}
	g.queues[key] = nil
	g.busy[msg.Offset] = key
	return true
}

// release records that the record at offset is finished: the next record
// of its key, if any, becomes ready. Offsets the gate did not let through
// (no key, or Unordered) are ignored.
func (g *orderGate) release(offset int64) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	key, ok := g.busy[offset]
	if !ok {
		return
	}
	delete(g.busy, offset)
	queue := g.queues[key]
	if len(queue) == 0 {
		delete(g.queues, key) // the key is idle
		return
	}
	next := queue[0]
	queue[0] = nil // let the record be collected once taken
	g.queues[key] = queue[1:]
	g.waiting--
	g.busy[next.Offset] = key
	g.ready = append(g.ready, next)
	select {
	case g.readyNote <- struct{}{}:
	default: // a signal is pending already
	}
}

// full reports whether the claim must stop reading until a record is
// released.
func (g *orderGate) full() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting >= maxWaiting
}

// readied returns a channel that receives when records became ready; it is
// nil (never ready) for the Unordered gate.
func (g *orderGate) readied() <-chan struct{} {
	if g == nil {
		return nil
	}
	return g.readyNote
}

// takeReady returns the records released since the last call, in the order
// they were released.
func (g *orderGate) takeReady() []*sarama.ConsumerMessage {
	g.mu.Lock()
	defer g.mu.Unlock()
	ready := g.ready
	g.ready = nil
	return ready
}

// readable returns the channel the claim reads records from: the claim's,
// or nil (never readable) while the gate holds maxWaiting records, so that
// the claim waits for a release instead of reading more.
func readable(claim sarama.ConsumerGroupClaim, gate *orderGate) <-chan *sarama.ConsumerMessage {
	if gate.full() {
		return nil
	}
	return claim.Messages()
}
