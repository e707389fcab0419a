package kafkatest

import (
	"context"
	"errors"
	"fmt"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
)

// Header is one record header, as ProduceRaw writes it: keys may repeat and
// values are any bytes.
type Header = kafkaengine.Header

// Produce writes one record to topic and returns once every in-sync replica
// has acknowledged it (acks=all), or with the error that kept it from being
// written, such as kerr.UnknownTopicOrPartition for a topic that does not
// exist or ctx's error. An empty key is written as a null key, as the
// Gamelan engine sends tasks; headers are written in key order.
func (b *Broker) Produce(ctx context.Context, topic, key string, value []byte, headers map[string]string) error {
	return b.produce(func(p *kafkaengine.Producer) error { return p.Produce(ctx, topic, key, value, headers) })
}

// ProduceJSON writes v encoded as JSON, as Produce does; use it for any of
// the message types of internal/adapters/kafka, or for a map that leaves
// fields out or adds some.
func (b *Broker) ProduceJSON(ctx context.Context, topic, key string, v any, headers map[string]string) error {
	return b.produce(func(p *kafkaengine.Producer) error { return p.ProduceJSON(ctx, topic, key, v, headers) })
}

// ProduceTask writes msg to the tasks topic (TasksTopic), keyed by its run
// id as docs/protocol.md asks, without headers. Use ProduceJSON with an empty key
// for a task shaped as the Gamelan engine sends it (no key), with an
// authorization header (kafka.AuthorizationHeader), or to another topic.
func (b *Broker) ProduceTask(ctx context.Context, msg kafka.TaskMessage) error {
	return b.produce(func(p *kafkaengine.Producer) error { return p.ProduceTask(ctx, TasksTopic, msg, nil) })
}

// ProduceRaw writes one record of arbitrary bytes, for malformed input: a
// nil key or value is written as null (a nil value is a tombstone), and
// headers are written as given, repeated keys included. It waits for the
// acknowledgement as Produce does.
func (b *Broker) ProduceRaw(ctx context.Context, topic string, key, value []byte, headers ...Header) error {
	return b.produce(func(p *kafkaengine.Producer) error { return p.ProduceRaw(ctx, topic, key, value, headers...) })
}

// produce runs fn with the harness's producer, created on first use with
// the compression of WithCompression.
func (b *Broker) produce(fn func(*kafkaengine.Producer) error) error {
	b.producerMu.Lock()
	if b.closed {
		b.producerMu.Unlock()
		return errors.New("kafkatest: produce: broker closed")
	}
	if b.producer == nil {
		p, err := kafkaengine.NewProducer(b.ClientOptions(), b.compression...)
		if err != nil {
			b.producerMu.Unlock()
			return fmt.Errorf("kafkatest: %w", err)
		}
		b.producer = p
	}
	p := b.producer
	b.producerMu.Unlock()
	if err := fn(p); err != nil {
		return fmt.Errorf("kafkatest: %w", err)
	}
	return nil
}
