// Package grpctest is a small, real engine side of the gRPC wire contract
// (docs/protocol.md, section 2), for the tests of the executor's gRPC adapters.
//
// An Engine serves tech.kayys.gamelan.grpc.v1.ExecutorService on a real
// listener on 127.0.0.1 and calls the executor's
// tech.kayys.gamelan.dispatcher.Executor.Execute (push). It speaks protobuf
// only: converting to and from internal/domain is the adapter's job, and is
// exactly what the tests check.
//
// What it does, per RPC:
//   - RegisterExecutor records the request (idempotent: the latest wins) and
//     answers executor_id, status "REGISTERED" (empty with
//     WithEmptyRegistrationStatus, as Gamelan does) and registered_at.
//     UnregisterExecutor removes the registration and records the id.
//   - Heartbeat from an executor the engine does not know (never registered,
//     unregistered, or dropped with Forget) fails with codes.NotFound, so that
//     the executor re-registers; a known executor's heartbeat is recorded.
//   - StreamTasks sends the tasks queued for the executor (Enqueue) and keeps
//     at most max_concurrent of them outstanding on the stream; it sends
//     nothing when max_concurrent <= 0. It does not require a registration.
//     With WithStreamTasksCompletesImmediately it ends at once with no task,
//     as Gamelan does.
//   - ReportResults reads the whole batch, records it, and only then answers
//     Empty: the Empty is the executor's acknowledgement. FailReportResults
//     makes the next calls fail with codes.Unavailable after reading the
//     batch and without recording it.
//   - ExecuteStream: see the convention below.
//
// The ExecuteStream convention. The RPC carries no executor id of its own, so
// the executor's first message on the stream must be a heartbeat carrying its
// executor_id: that id names the stream for its whole life. A first message
// that is not a heartbeat with an executor id ends the stream with
// codes.InvalidArgument; an executor the engine does not know ends it with
// codes.NotFound, as for unary heartbeats, and so does any later heartbeat on
// the stream from an executor the engine has since forgotten. The engine then
// sends the executor's queued tasks as EngineMessage.task, keeping at most
// the registration's max_concurrent_tasks outstanding on the stream (read
// again each time, so re-registering changes it), and Cancel sends
// EngineMessage.cancellation on the stream that carries the task. Heartbeats,
// acknowledgements and results the executor sends on the stream are recorded
// like their unary counterparts (Heartbeats, Acks, Results).
//
// Flow control. A task is outstanding from the moment it is taken from the
// queue for a stream until a result with the same run_id, node_id and attempt
// arrives, through ReportResults or any ExecuteStream. Outstanding tasks
// belong to their stream: when the stream ends they stop counting, and the
// engine neither requeues nor reassigns them (a test that wants redelivery
// calls Enqueue again). Only a task whose Send failed goes back to the front
// of the queue.
//
// Results are deduplicated on "runId:nodeId:attempt" (domain.IdempotencyKey)
// like the Gamelan engine does: UniqueResults keeps the first result per key,
// Results keeps every one received, DuplicateResults counts the rest.
//
// Lifecycle. Start (or StartAt a fixed address) serves a new grpc.Server; Stop
// is a hard stop: open streams break and the listener closes, and Stop
// returns once every handler has returned. The engine's state (registrations,
// queues, results, injected faults) survives Stop, so a test can stop the
// engine, bring it back with StartAt(t, e.Addr()) on the same port, and watch
// the executor reconnect. Start registers Close as a test cleanup; Close stops
// the server and closes the cached push connections.
//
// Security. WithServerOptions passes TLS credentials, interceptors or any
// other grpc.ServerOption through. WithAuth verifies every RPC and refuses a
// failure with codes.Unauthenticated (counted by Refused); BearerToken reads
// the "authorization: Bearer ..." metadata for such a hook. Push dials in
// plaintext unless WithPushDialOptions says otherwise, and takes per-call
// options (grpc.PerRPCCredentials) for tokens.
//
// Every method is safe for concurrent use. Records are kept for the life of
// the engine without bound: an Engine serves one test. Values handed in are
// copied and values handed out are copies, so neither side can race with the
// engine.
package grpctest
