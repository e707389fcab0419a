package kafkatest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/domain"
)

// MessageReader is a Reader whose records hold JSON values of type T, one
// of the message types of internal/adapters/kafka. Records whose value does
// not decode as T are set aside as malformed rather than failing the test
// at once, so that a test can also check that nothing malformed was
// written. Create it with NewMessageReader or one of the Broker's typed
// helpers (Tasks, Registrations, Heartbeats, Unregistrations).
type MessageReader[T any] struct {
	*Reader

	// mu guards decoded, which caches the decoding of the first
	// len(decoded) records; records are never modified, so an entry never
	// goes stale.
	mu      sync.Mutex
	decoded []decoded[T]
}

// decoded is one record's decoding.
type decoded[T any] struct {
	message T
	err     error
}

// NewMessageReader starts reading topic of b as NewReader does, decoding
// its values as T.
func NewMessageReader[T any](t testing.TB, b *Broker, topic string) *MessageReader[T] {
	t.Helper()
	return &MessageReader[T]{Reader: b.NewReader(t, topic)}
}

// Tasks reads the tasks topic (TasksTopic), to check what the engine side
// wrote or that the executor wrote nothing there.
func (b *Broker) Tasks(t testing.TB) *MessageReader[kafka.TaskMessage] {
	t.Helper()
	return NewMessageReader[kafka.TaskMessage](t, b, TasksTopic)
}

// Registrations reads the registrations topic (RegistrationsTopic).
func (b *Broker) Registrations(t testing.TB) *MessageReader[kafka.RegistrationMessage] {
	t.Helper()
	return NewMessageReader[kafka.RegistrationMessage](t, b, RegistrationsTopic)
}

// Heartbeats reads the heartbeats topic (HeartbeatsTopic).
func (b *Broker) Heartbeats(t testing.TB) *MessageReader[kafka.HeartbeatMessage] {
	t.Helper()
	return NewMessageReader[kafka.HeartbeatMessage](t, b, HeartbeatsTopic)
}

// Unregistrations reads the unregistrations topic (UnregistrationsTopic).
func (b *Broker) Unregistrations(t testing.TB) *MessageReader[kafka.UnregistrationMessage] {
	t.Helper()
	return NewMessageReader[kafka.UnregistrationMessage](t, b, UnregistrationsTopic)
}

// decodeAll returns the decoding of every record read so far, in the order
// of Records.
func (r *MessageReader[T]) decodeAll(records []Record) []decoded[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Another caller may have decoded further than records reach.
	for _, rec := range records[min(len(r.decoded), len(records)):] {
		var d decoded[T]
		if err := json.Unmarshal(rec.Value, &d.message); err != nil {
			d.err = fmt.Errorf("record %s/%d@%d does not decode as %T: %w", rec.Topic, rec.Partition, rec.Offset, d.message, err)
		}
		r.decoded = append(r.decoded, d)
	}
	return r.decoded[:len(records):len(records)]
}

// Messages returns the messages read so far, in the order of Records,
// leaving out malformed records.
func (r *MessageReader[T]) Messages() []T {
	var messages []T
	for _, d := range r.decodeAll(r.Records()) {
		if d.err == nil {
			messages = append(messages, d.message)
		}
	}
	return messages
}

// Malformed returns the records read so far whose value does not decode as
// T (a null value included), in the order of Records.
func (r *MessageReader[T]) Malformed() []Record {
	records := r.Records()
	var malformed []Record
	for i, d := range r.decodeAll(records) {
		if d.err != nil {
			malformed = append(malformed, records[i])
		}
	}
	return malformed
}

// WaitForMessages waits until at least n messages have been read. It fails
// at once when a malformed record arrives, naming it, and otherwise as
// Reader.WaitUntil does.
func (r *MessageReader[T]) WaitForMessages(ctx context.Context, n int) error {
	return r.WaitForMessagesFunc(ctx, func(messages []T) bool { return len(messages) >= n })
}

// WaitForMessagesFunc waits until done reports true for the messages read
// so far, calling it now and after each fetched batch. It fails at once
// when a malformed record arrives, naming it, and otherwise as
// Reader.WaitUntil does. done must not keep or modify the slice.
func (r *MessageReader[T]) WaitForMessagesFunc(ctx context.Context, done func(messages []T) bool) error {
	var malformed error
	err := r.WaitUntil(ctx, func(records []Record) bool {
		messages := make([]T, 0, len(records))
		for _, d := range r.decodeAll(records) {
			if d.err != nil {
				malformed = d.err
				return true
			}
			messages = append(messages, d.message)
		}
		return done(messages)
	})
	if err != nil {
		return err
	}
	if malformed != nil {
		return fmt.Errorf("kafkatest: reader of %s: %w", r.Topic(), malformed)
	}
	return nil
}

// ResultReader reads results (kafka.ResultMessage) and deduplicates them as
// the engine does, on "runId:nodeId:attempt" with the first result winning.
// It counts each record once, however long the topic grows, so that a load
// of many thousand results is cheap to wait on. Create it with
// Broker.Results or Broker.ResultsFrom.
type ResultReader struct {
	*MessageReader[kafka.ResultMessage]

	// mu guards the tally of the first counted records.
	mu        sync.Mutex
	counted   int
	unique    map[string]kafka.ResultMessage
	counts    map[string]int
	malformed error // the first record that is not a result
}

// Results reads the results topic (ResultsTopic).
func (b *Broker) Results(t testing.TB) *ResultReader {
	t.Helper()
	return b.ResultsFrom(t, ResultsTopic)
}

// ResultsFrom reads results from topic, for an executor configured with
// another results topic.
func (b *Broker) ResultsFrom(t testing.TB, topic string) *ResultReader {
	t.Helper()
	return &ResultReader{MessageReader: NewMessageReader[kafka.ResultMessage](t, b, topic),
		unique: make(map[string]kafka.ResultMessage), counts: make(map[string]int)}
}

// ResultKey returns the key results are deduplicated on,
// "runId:nodeId:attempt" (domain.IdempotencyKey).
func ResultKey(m kafka.ResultMessage) string {
	return domain.IdempotencyKey(m.RunID, m.NodeID, m.Attempt)
}

// tally counts the results among records not counted yet, and returns
// the first malformed record met so far, if any.
func (r *ResultReader) tally(records []Record) error {
	decoded := r.decodeAll(records)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range decoded[min(r.counted, len(decoded)):] {
		if d.err != nil {
			r.malformed = cmp.Or(r.malformed, d.err)
			continue
		}
		key := ResultKey(d.message)
		if _, seen := r.unique[key]; !seen {
			r.unique[key] = d.message
		}
		r.counts[key]++
	}
	r.counted = max(r.counted, len(decoded))
	return r.malformed
}

// locked tallies the records read so far and runs fn on the tally.
func (r *ResultReader) locked(fn func()) {
	_ = r.tally(r.snapshot())
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

// All returns every result read so far, duplicates included, in the order
// of Records.
func (r *ResultReader) All() []kafka.ResultMessage {
	return r.Messages()
}

// UniqueResults returns the first result read for each ResultKey.
func (r *ResultReader) UniqueResults() map[string]kafka.ResultMessage {
	var unique map[string]kafka.ResultMessage
	r.locked(func() { unique = maps.Clone(r.unique) })
	return unique
}

// Unique returns how many distinct ResultKeys have been read so far.
func (r *ResultReader) Unique() int {
	n := 0
	r.locked(func() { n = len(r.unique) })
	return n
}

// Duplicates returns how many results read so far repeat the ResultKey of
// an earlier one.
func (r *ResultReader) Duplicates() int {
	duplicates := 0
	r.locked(func() { duplicates = r.duplicatesLocked() })
	return duplicates
}

func (r *ResultReader) duplicatesLocked() int {
	n := 0
	for _, count := range r.counts {
		n += count - 1
	}
	return n
}

// DuplicatedKeys returns the ResultKeys answered more than once so far,
// sorted.
func (r *ResultReader) DuplicatedKeys() []string {
	var keys []string
	r.locked(func() {
		for key, count := range r.counts {
			if count > 1 {
				keys = append(keys, key)
			}
		}
	})
	slices.Sort(keys)
	return keys
}

// WaitForUnique waits until results for at least n distinct ResultKeys have
// been read. It fails at once when a malformed record arrives, naming it,
// and otherwise as Reader.WaitUntil does, saying how far it got.
func (r *ResultReader) WaitForUnique(ctx context.Context, n int) error {
	var malformed error
	err := r.WaitUntil(ctx, func(records []Record) bool {
		malformed = r.tally(records)
		r.mu.Lock()
		defer r.mu.Unlock()
		return malformed != nil || len(r.unique) >= n
	})
	switch {
	case err != nil:
		r.mu.Lock()
		defer r.mu.Unlock()
		return fmt.Errorf("%d of %d unique results (%d duplicates): %w", len(r.unique), n, r.duplicatesLocked(), err)
	case malformed != nil:
		return fmt.Errorf("kafkatest: reader of %s: %w", r.Topic(), malformed)
	}
	return nil
}
