package kafkaengine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fetchMaxWait bounds how long a fetch waits on the broker for records,
// and so the delay between a record's write and its arrival.
const fetchMaxWait = 50 * time.Millisecond

// Record is one record a Consumer fetched.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Key is nil for a null key.
	Key []byte
	// Value is nil for a null value (a tombstone).
	Value []byte
	// Headers holds the record's headers; for a key that repeats, the last
	// value wins. It is nil when the record has none.
	Headers map[string]string
	// Timestamp is the record's timestamp (the producer's clock).
	Timestamp time.Time
	// Compression is the codec of the batch the record came in: "none",
	// "gzip", "snappy", "lz4" or "zstd".
	Compression string
}

// Consumer reads topics from their first offset: as a member of a consumer
// group, committing as it goes, or, without one, every record whatever any
// group does, committing nothing. Create it with NewConsumer, then Run.
type Consumer struct {
	client *kgo.Client
}

// NewConsumer returns a consumer of topics reaching the cluster through
// opts (Broker.ClientOptions, say), in group when it is not empty.
func NewConsumer(opts []kgo.Opt, group string, topics ...string) (*Consumer, error) {
	opts = append(slices.Clone(opts),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(fetchMaxWait),
	)
	if group != "" {
		opts = append(opts, kgo.ConsumerGroup(group))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("consumer client: %w", err)
	}
	return &Consumer{client: client}, nil
}

// Run hands each fetched batch of records, in order within a partition, to
// handle, and each fetch error (which franz-go retries itself) to failed,
// until ctx ends or the consumer is closed.
func (c *Consumer) Run(ctx context.Context, handle func([]Record), failed func(topic string, partition int32, err error)) {
	for {
		fetches := c.client.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(failed)
		var batch []Record
		fetches.EachRecord(func(rec *kgo.Record) { batch = append(batch, recordOf(rec)) })
		if len(batch) > 0 {
			handle(batch)
		}
	}
}

// Close closes the consumer's client (a group member leaves its group); Run
// returns.
func (c *Consumer) Close() { c.client.Close() }

// recordOf copies what the engine needs of rec.
func recordOf(rec *kgo.Record) Record {
	out := Record{
		Topic:       rec.Topic,
		Partition:   rec.Partition,
		Offset:      rec.Offset,
		Key:         rec.Key,
		Value:       rec.Value,
		Timestamp:   rec.Timestamp,
		Compression: compressionName(rec.Attrs.CompressionType()),
	}
	if len(rec.Headers) > 0 {
		out.Headers = make(map[string]string, len(rec.Headers))
		for _, h := range rec.Headers {
			out.Headers[h.Key] = string(h.Value)
		}
	}
	return out
}

// compressionName names a Kafka record batch compression attribute.
func compressionName(codec uint8) string {
	switch codec {
	case 0:
		return "none"
	case 1:
		return "gzip"
	case 2:
		return "snappy"
	case 3:
		return "lz4"
	case 4:
		return "zstd"
	default:
		return fmt.Sprintf("unknown(%d)", codec)
	}
}
