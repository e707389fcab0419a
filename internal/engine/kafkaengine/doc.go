// Package kafkaengine is the engine and broker side of the Kafka wire
// protocol (docs/protocol.md, section 4): the one implementation that the
// reference engine (internal/devengine) runs and that the tests of the
// executor's Kafka adapters drive through internal/adapters/kafka/kafkatest.
// A change to the engine's part of the Kafka protocol is made here.
//
// It speaks franz-go, while the executor speaks sarama, so the two sides
// share no code but the JSON message types of internal/adapters/kafka.
//
//   - Broker is an in-process cluster (github.com/twmb/franz-go/pkg/kfake)
//     listening where its configuration says (127.0.0.1 by default), whose
//     topics (the five of docs/protocol.md, or others) are created
//     explicitly at start, with automatic topic creation off. It can
//     require SASL and serve TLS, keep its state in a directory and Restart
//     on the same ports.
//   - Producer writes records as the engine does (acks=all, no linger,
//     keyed by run id, snappy as Gamelan); ProduceTask writes a task.
//   - Consumer reads the topics the executor side writes (results,
//     registrations, heartbeats, unregistrations) from their first offset,
//     as a consumer group member or, for tests, without a group.
//
// Every method is safe for concurrent use.
package kafkaengine
