// Package kafkatest is the engine and broker side of the Kafka wire contract
// (docs/protocol.md, section 4), for the tests of the executor's Kafka
// adapters: a thin layer over internal/engine/kafkaengine, the engine side
// the reference engine runs too, with the readers, waits and restarts of a
// test.
//
// A Broker is an in-process Kafka cluster (kafkaengine.Broker, on kfake)
// listening on 127.0.0.1 only, plus the engine's half of the conversation,
// spoken with franz-go: it produces tasks the way an engine does
// (kafkaengine.Producer) and reads back (kafkaengine.Consumer) what the
// executor wrote to the results, registrations, heartbeats and
// unregistrations topics. The executor under test talks to it with its own
// client (sarama) through Addrs, so the two sides share no code but the JSON
// types of internal/adapters/kafka.
//
// Topics. Start creates the five default topics of docs/protocol.md
// (workflow.tasks, workflow-results, executor-registrations,
// executor-heartbeats, executor-unregistrations), or the ones given with
// WithTopics, explicitly, each with WithPartitions partitions (4 by
// default). Automatic topic creation stays off: a metadata request that asks
// for it (sarama's default) does not create a topic, and producing to or
// consuming from an unknown topic fails with UNKNOWN_TOPIC_OR_PARTITION, as
// against a production cluster whose topics are managed by their owners.
//
// Producing. Produce, ProduceJSON, ProduceTask and ProduceRaw write one
// record with acks=all through one cached franz-go client and return once
// the broker has acknowledged it. The client is idempotent, partitions by
// the murmur2 hash of the key (as the Java client and sarama's
// NewHashPartitioner do) and compresses batches with snappy, as the Gamelan
// engine does, unless WithCompression says otherwise; franz-go sends a batch
// compressed only when that makes it smaller, so a tiny value may go out
// uncompressed (Record.Compression tells).
//
// Reading. A Reader consumes one topic from its first offset, without a
// consumer group, into memory for the life of the test, so it sees every
// record whatever the executor's group does and never commits anything.
// WaitFor and WaitUntil wake on each fetched batch, never by polling.
// MessageReader decodes the records as one of the JSON message types, and
// ResultReader adds the engine's deduplication of results on
// "runId:nodeId:attempt" (first wins). Records are kept without bound: a
// Reader serves one test.
//
// Groups and offsets. CommittedOffsets, Lag, GroupMembers and
// WaitGroupStable read the cluster's own state (kfake's GroupInfo and
// PartitionInfos) rather than asking over the wire, so faults injected
// through Cluster().Fault never distort what a test checks; WaitForLag and
// WaitGroupStable poll that state every few milliseconds until a deadline.
//
// Restarts. With WithPersistence the cluster keeps its records, topics,
// groups and committed offsets in a directory of t.TempDir(), and Restart
// closes it and brings up a new one on the same ports and directory, as a
// broker restart would: clients, the executor's included, see their
// connections drop and must reconnect. RestartAfter keeps the brokers down
// until a function of the test returns, for outages longer than the
// clients' own retries. Restart waits until every broker answers a
// request, authenticated and over TLS as configured.
//
// Security. WithSASL makes every broker demand SASL (PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512) with one user, and WithTLS serves TLS with a server
// configuration (mutual when it requires client certificates) while the
// harness's own clients dial with the client configuration. ClientOptions
// returns the franz-go options that reach the cluster with them, for tests
// that need a client of their own, such as a group consumer.
//
// Every method of Broker, Reader, MessageReader and ResultReader is safe for
// concurrent use; Start, Restart and the reader constructors take a
// testing.TB and must be called from the test's goroutine. Start and the
// reader constructors register their cleanups with t; Close may also be
// called earlier and is idempotent.
package kafkatest
