package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
)

// Record is one record a Reader fetched.
type Record = kafkaengine.Record

// Reader consumes one topic from its first offset into memory, without a
// consumer group, for the life of a test. Create it with Broker.NewReader.
type Reader struct {
	broker   *Broker
	topic    string
	consumer *kafkaengine.Consumer
	cancel   context.CancelFunc
	done     chan struct{} // closed when the fetching goroutine has returned
	closer   sync.Once

	mu      sync.Mutex
	records []Record
	// changed is closed and replaced whenever records grow or the reader
	// stops, so that waiters wake without polling.
	changed chan struct{}
	stopped bool
	// lastFetchErr is the latest error a fetch reported, for the messages
	// of failed waits; franz-go retries such errors itself.
	lastFetchErr error
}

// NewReader starts reading topic from its first offset and registers the
// reader's Close as a cleanup of t. It fails t when topic does not exist
// (topics are never created by accident here) or the client cannot be
// created. Records produced before the reader started are read too.
func (b *Broker) NewReader(t testing.TB, topic string) *Reader {
	t.Helper()
	err := b.inspect(func(c *kfake.Cluster) error {
		if c.TopicInfo(topic) == nil {
			return fmt.Errorf("unknown topic %s", topic)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("kafkatest: reader of %s: %v", topic, err)
	}
	consumer, err := kafkaengine.NewConsumer(b.ClientOptions(), "", topic) // no group: every record
	if err != nil {
		t.Fatalf("kafkatest: reader of %s: %v", topic, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reader{
		broker:   b,
		topic:    topic,
		consumer: consumer,
		cancel:   cancel,
		done:     make(chan struct{}),
		changed:  make(chan struct{}),
	}
	go r.fetch(ctx)
	t.Cleanup(r.Close)
	return r
}

// fetch appends every fetched record until ctx ends or the consumer closes.
func (r *Reader) fetch(ctx context.Context) {
	defer close(r.done)
	r.consumer.Run(ctx, func(batch []Record) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.records = append(r.records, batch...)
		close(r.changed)
		r.changed = make(chan struct{})
	}, func(_ string, _ int32, err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.lastFetchErr = err
	})
}

// Topic returns the topic the reader reads.
func (r *Reader) Topic() string { return r.topic }

// Records returns the records read so far, in the order they arrived: in
// offset order within a partition, interleaved across partitions. The
// slice is the caller's; its records share their byte slices with the
// reader and must not be modified.
func (r *Reader) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// snapshot returns the records read so far without copying them: records
// are only ever appended, and the full slice expression keeps an append
// from writing into the reader's backing array.
func (r *Reader) snapshot() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records[:len(r.records):len(r.records)]
}

// Len returns the number of records read so far.
func (r *Reader) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}

// WaitFor waits until at least n records have been read. It fails when
// ctx ends first, with its cause and the last fetch error if any, or when
// the reader is closed.
func (r *Reader) WaitFor(ctx context.Context, n int) error {
	return r.WaitUntil(ctx, func(records []Record) bool { return len(records) >= n })
}

// WaitUntil waits until done reports true for the records read so far,
// calling it now and after each fetched batch, never by polling. done runs
// without the reader's lock held and must not modify the records or keep
// the slice. WaitUntil fails when ctx ends first, with its cause and the
// last fetch error if any, or when the reader is closed.
func (r *Reader) WaitUntil(ctx context.Context, done func(records []Record) bool) error {
	for {
		r.mu.Lock()
		// The full slice expression keeps an append by done from writing
		// into the reader's backing array.
		records := r.records[:len(r.records):len(r.records)]
		changed, stopped, fetchErr := r.changed, r.stopped, r.lastFetchErr
		r.mu.Unlock()
		if done(records) {
			return nil
		}
		if stopped {
			return fmt.Errorf("kafkatest: reader of %s closed after %d records", r.topic, len(records))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			err := fmt.Errorf("kafkatest: reader of %s: %d records so far: %w", r.topic, len(records), context.Cause(ctx))
			if fetchErr != nil {
				err = errors.Join(err, fmt.Errorf("last fetch error: %w", fetchErr))
			}
			return err
		}
	}
}

// CatchUp waits until every record the topic holds now (up to its high
// watermarks) has been read, so that a check that something is absent sees
// everything written before it. It fails as WaitFor does.
func (r *Reader) CatchUp(ctx context.Context) error {
	var written int64
	err := r.broker.inspect(func(c *kfake.Cluster) error {
		for _, p := range c.PartitionInfos(r.topic) {
			written += p.HighWatermark - p.LogStartOffset
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kafkatest: reader of %s: %w", r.topic, err)
	}
	return r.WaitFor(ctx, int(written))
}

// Close stops reading and closes the reader's client; the records read stay
// available. Waits in progress fail. Close is idempotent.
func (r *Reader) Close() {
	r.closer.Do(func() {
		r.cancel()
		r.consumer.Close()
		<-r.done
		r.mu.Lock()
		defer r.mu.Unlock()
		r.stopped = true
		close(r.changed)
		r.changed = make(chan struct{})
	})
}
