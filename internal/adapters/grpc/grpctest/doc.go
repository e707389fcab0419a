// Package grpctest is the engine side of the gRPC wire contract
// (docs/protocol.md, section 2) for the tests of the executor's gRPC
// adapters and of the service wired with them: a thin layer over
// internal/engine/grpcengine, the engine side the reference engine serves
// too, that records what executors say and adds test conveniences.
//
// An Engine is a grpcengine.Server on a real listener on 127.0.0.1, whose
// Handler records every call. It speaks protobuf only: converting to and
// from internal/domain is the adapter's job, and is exactly what the tests
// check. The protocol's rules (per RPC, the ExecuteStream convention, task
// queues and flow control, cancellations, Push) are grpcengine's and
// documented there; what this package adds:
//
//   - Registry. RegisterExecutor records the request (the latest wins;
//     Registration, Registrations, RegisterCalls); UnregisterExecutor
//     removes it and records the id (Unregistered). A heartbeat, unary or
//     on an ExecuteStream, from an executor the engine does not know (never
//     registered, unregistered, or dropped with Forget) fails with
//     codes.NotFound; a known executor's heartbeat is recorded
//     (Heartbeats). StreamTasks does not require a registration; each call
//     is recorded (StreamCalls, StreamMaxConcurrent). An ExecuteStream's
//     limit is the registration's max_concurrent_tasks (none without one).
//     Acknowledgements on ExecuteStream are recorded (Acks).
//   - Results are recorded and deduplicated on "runId:nodeId:attempt"
//     (domain.IdempotencyKey) as the Gamelan engine does: UniqueResults
//     keeps the first result per key, Results keeps every one received,
//     DuplicateResults counts the rest, WaitForResults waits for a number
//     of unique ones. The tasks a stream sent and had not seen answered when
//     it ended are neither requeued nor reassigned (a test that wants
//     redelivery calls Enqueue again).
//   - Faults. FailReportResults makes the next calls fail with
//     codes.Unavailable after reading the batch and without recording it.
//     Forget drops a registration as an engine restart would.
//   - Options: WithServerOptions, WithAuth, WithEmptyRegistrationStatus,
//     WithStreamTasksCompletesImmediately and WithPushDialOptions set the
//     grpcengine.Config of the same meaning.
//
// Lifecycle. Start (or StartAt a fixed address) serves; Stop is a hard stop,
// returning once every handler has returned. The engine's state
// (registrations, queues, results, injected faults) survives Stop, so a test
// can stop the engine, bring it back with StartAt(t, e.Addr()) on the same
// port, and watch the executor reconnect. Start registers Close as a test
// cleanup; Close stops the server and closes the cached push connections.
//
// Every method is safe for concurrent use. Records are kept for the life of
// the engine without bound: an Engine serves one test. Values handed in are
// copied and values handed out are copies, so neither side can race with the
// engine.
package grpctest
