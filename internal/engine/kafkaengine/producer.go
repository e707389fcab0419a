package kafkaengine

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
)

// Header is one record header, as ProduceRaw writes it: keys may repeat and
// values are any bytes.
type Header struct {
	Key   string
	Value []byte
}

// Producer writes records as the engine does: acks=all, no linger (each
// record goes out at once), keyed records placed by the murmur2 hash of the
// key (as the Java client and sarama's NewHashPartitioner do), batches
// compressed with snappy, as Gamelan does, unless other codecs are given
// (franz-go sends a batch compressed only when that makes it smaller). The
// client is idempotent. Create it with NewProducer.
type Producer struct {
	client *kgo.Client
}

// NewProducer returns a producer reaching the cluster through opts (seed
// brokers, TLS, SASL: Broker.ClientOptions, say), compressing with codecs
// in order of preference (snappy, then none, when empty).
func NewProducer(opts []kgo.Opt, codecs ...kgo.CompressionCodec) (*Producer, error) {
	opts = append(slices.Clone(opts),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if len(codecs) > 0 {
		opts = append(opts, kgo.ProducerBatchCompression(codecs...))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("producer client: %w", err)
	}
	return &Producer{client: client}, nil
}

// ProduceTask writes msg to topic keyed by its run id, as docs/protocol.md
// asks (a run's tasks stay in order), with headers (an authorization
// header, kafka.AuthorizationHeader, say).
func (p *Producer) ProduceTask(ctx context.Context, topic string, msg kafka.TaskMessage, headers map[string]string) error {
	return p.ProduceJSON(ctx, topic, msg.RunID, msg, headers)
}

// ProduceJSON writes v encoded as JSON, as Produce does.
func (p *Producer) ProduceJSON(ctx context.Context, topic, key string, v any, headers map[string]string) error {
	value, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("produce to %s: encode %T: %w", topic, v, err)
	}
	return p.Produce(ctx, topic, key, value, headers)
}

// Produce writes one record and returns once every in-sync replica has
// acknowledged it, or with the error that kept it from being written, such
// as kerr.UnknownTopicOrPartition for a topic that does not exist or ctx's
// error. An empty key is written as a null key, as the Gamelan engine sends
// tasks; headers are written in key order.
func (p *Producer) Produce(ctx context.Context, topic, key string, value []byte, headers map[string]string) error {
	var keyBytes []byte
	if key != "" {
		keyBytes = []byte(key)
	}
	list := make([]Header, 0, len(headers))
	for _, k := range slices.Sorted(maps.Keys(headers)) {
		list = append(list, Header{Key: k, Value: []byte(headers[k])})
	}
	return p.ProduceRaw(ctx, topic, keyBytes, value, list...)
}

// ProduceRaw writes one record of arbitrary bytes: a nil key or value is
// written as null (a nil value is a tombstone), and headers are written as
// given, repeated keys included. It waits for the acknowledgement as
// Produce does.
func (p *Producer) ProduceRaw(ctx context.Context, topic string, key, value []byte, headers ...Header) error {
	record := &kgo.Record{Topic: topic, Key: key, Value: value}
	for _, h := range headers {
		record.Headers = append(record.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	if err := p.client.ProduceSync(ctx, record).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s (key %q): %w", topic, printable(key), err)
	}
	return nil
}

// ProduceAsync writes record without waiting: done is called once the
// broker acknowledged it or it failed. Flush waits for every one.
func (p *Producer) ProduceAsync(ctx context.Context, record *kgo.Record, done func(*kgo.Record, error)) {
	p.client.Produce(ctx, record, done)
}

// Flush waits until every record produced so far is acknowledged or failed.
func (p *Producer) Flush(ctx context.Context) error { return p.client.Flush(ctx) }

// Close closes the producer's client.
func (p *Producer) Close() { p.client.Close() }

// printable shortens key for an error message.
func printable(key []byte) string {
	const limit = 64
	s := strings.ToValidUTF8(string(key), "?")
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}
