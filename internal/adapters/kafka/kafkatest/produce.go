package kafkatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// Produce writes one record to topic and returns once every in-sync replica
// has acknowledged it (acks=all), or with the error that kept it from being
// written, such as kerr.UnknownTopicOrPartition for a topic that does not
// exist or ctx's error. An empty key is written as a null key, as the
// Gamelan engine sends tasks; headers are written in key order.
func (b *Broker) Produce(ctx context.Context, topic, key string, value []byte, headers map[string]string) error {
	var keyBytes []byte
	if key != "" {
		keyBytes = []byte(key)
	}
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	list := make([]Header, 0, len(keys))
	for _, k := range keys {
		list = append(list, Header{Key: k, Value: []byte(headers[k])})
	}
	return b.ProduceRaw(ctx, topic, keyBytes, value, list...)
}

// ProduceJSON writes v encoded as JSON, as Produce does; use it for any of
// the message types of internal/adapters/kafka, or for a map that leaves
// fields out or adds some.
func (b *Broker) ProduceJSON(ctx context.Context, topic, key string, v any, headers map[string]string) error {
	value, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("kafkatest: produce to %s: encode %T: %w", topic, v, err)
	}
	return b.Produce(ctx, topic, key, value, headers)
}

// ProduceTask writes msg to the tasks topic (TasksTopic), keyed by its run
// id as docs/protocol.md asks, without headers. Use ProduceJSON with an empty key
// for a task shaped as the Gamelan engine sends it (no key), with an
// authorization header (kafka.AuthorizationHeader), or to another topic.
func (b *Broker) ProduceTask(ctx context.Context, msg kafka.TaskMessage) error {
	return b.ProduceJSON(ctx, TasksTopic, msg.RunID, msg, nil)
}

// ProduceRaw writes one record of arbitrary bytes, for malformed input: a
// nil key or value is written as null (a nil value is a tombstone), and
// headers are written as given, repeated keys included. It waits for the
// acknowledgement as Produce does.
func (b *Broker) ProduceRaw(ctx context.Context, topic string, key, value []byte, headers ...Header) error {
	client, err := b.producerClient()
	if err != nil {
		return fmt.Errorf("kafkatest: produce to %s: %w", topic, err)
	}
	record := &kgo.Record{Topic: topic, Key: key, Value: value}
	for _, h := range headers {
		record.Headers = append(record.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	if err := client.ProduceSync(ctx, record).FirstErr(); err != nil {
		return fmt.Errorf("kafkatest: produce to %s (key %q): %w", topic, printable(key), err)
	}
	return nil
}

// producerClient returns the cached producer, creating it on first use.
func (b *Broker) producerClient() (*kgo.Client, error) {
	b.producerMu.Lock()
	defer b.producerMu.Unlock()
	// Checked under producerMu, so that Close, which marks the broker
	// closed before it takes producerMu, never leaves a client behind.
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return nil, errors.New("broker closed")
	}
	if b.producer != nil {
		return b.producer, nil
	}
	opts := append(b.ClientOptions(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// A test waits for each record: do not hold it back for a batch.
		kgo.ProducerLinger(0),
		// The Java client's and sarama's NewHashPartitioner's placement.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if len(b.settings.compression) > 0 {
		opts = append(opts, kgo.ProducerBatchCompression(b.settings.compression...))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("producer client: %w", err)
	}
	b.producer = client
	return client, nil
}

// printable shortens key for an error message.
func printable(key []byte) string {
	const limit = 64
	s := strings.ToValidUTF8(string(key), "?")
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}
