// Package kafka is the Kafka transport of the executor service, written with
// github.com/IBM/sarama and speaking docs/protocol.md, section 4:
//
//   - TaskSource consumes TaskMessage JSON from the tasks topic
//     (workflow.tasks) in a consumer group shared by the replicas of one
//     service, and commits a record's offset only after its result is
//     acknowledged: at least once, nothing lost, duplicates absorbed by the
//     runtime's deduplication. Malformed records are answered FAILED
//     INVALID_TASK when their run and node can be read.
//   - ResultSink produces ResultMessage JSON to the results topic
//     (workflow-results), keyed by run id, with acks=all.
//   - Registrar and Heartbeater produce registrations, heartbeats and
//     unregistrations, keyed by executor id. The Gamelan engine reads none of
//     these topics: against it, Kafka executors register over HTTP.
//
// Producers and consumers never share a sarama client (sharing one makes
// every message wait about a second); producers send without flush delays;
// consumers accept any compression the engine uses (Gamelan: snappy). SASL
// (PLAIN, SCRAM-SHA-256/512) and TLS come from Config. Every produced record
// carries "authorization: Bearer <JWT>" when tokens are configured.
package kafka
