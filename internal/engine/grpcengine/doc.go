// Package grpcengine is the engine side of the gRPC wire protocol
// (docs/protocol.md, section 2): the one implementation that the reference
// engine (internal/devengine) serves and that the tests of the executor's
// gRPC adapters drive through internal/adapters/grpc/grpctest. A change to
// the engine's part of the gRPC protocol is made here.
//
// A Server serves tech.kayys.gamelan.grpc.v1.ExecutorService and calls the
// executor's tech.kayys.gamelan.dispatcher.Executor.Execute (Push). It
// speaks protobuf only. What the engine keeps (its registry, its results)
// is a Handler's: the Server decodes the calls, applies the protocol's
// rules, and tells the Handler.
//
// Per RPC:
//   - RegisterExecutor needs an executor_id (else codes.InvalidArgument),
//     then asks the Handler, and answers executor_id, status "REGISTERED"
//     (empty with Config.EmptyRegistrationStatus, as Gamelan does) and
//     registered_at. UnregisterExecutor tells the Handler.
//   - Heartbeat asks the Handler, whose error (NotRegistered for an
//     executor it does not know) fails the call, so that the executor
//     registers again.
//   - StreamTasks tells the Handler of the call (which may refuse it), then
//     sends the tasks queued for the executor, keeping at most
//     max_concurrent of them outstanding; it sends nothing when
//     max_concurrent <= 0. With Config.StreamTasksEndsAtOnce it ends at once
//     with no task, as Gamelan does.
//   - ReportResults reads the whole batch, hands it to the Handler, and only
//     then answers Empty, the executor's acknowledgement. A Handler error
//     fails the call and acknowledges nothing.
//   - ExecuteStream: the RPC carries no executor id, so the executor's first
//     message must be a heartbeat carrying its executor_id, which names the
//     stream for its whole life. A first message that is not a heartbeat with
//     an executor id ends the stream with codes.InvalidArgument; the
//     heartbeat goes to the Handler, whose error ends the stream, and so does
//     the error of a later heartbeat on it. The executor's queued tasks go
//     out as EngineMessage.task, at most the Handler's MaxConcurrentTasks
//     outstanding (read again before each task); heartbeats, acknowledgements
//     and results coming in go to the Handler.
//
// Tasks and flow control. Tasks wait in a queue per executor (Enqueue, or
// Offer, which queues only while a stream of the executor is open) until
// one of its open streams has room. A task is outstanding from the moment a
// stream takes it until a result with its run_id, node_id and attempt
// arrives (ReportResults or any ExecuteStream), even in a batch the Handler
// then refuses: the executor no longer runs the task. When a stream ends, its
// outstanding tasks stop counting and go to Handler.StreamClosed; the tasks
// still queued stay queued for the executor's next stream (Unqueue takes
// them back). A task whose Send failed goes back to the front of the queue.
//
// Cancellation. Cancel sends a TaskCancellation on every ExecuteStream that
// carries the task, or, for a task still queued for an executor whose open
// streams are all ExecuteStream calls, right after the task on the stream
// that takes it: a cancellation never overtakes its task. StreamTasks cannot
// carry cancellations.
//
// Health. Every serve also answers the standard health service
// (grpc.health.v1.Health) without credentials, Config.Auth notwithstanding:
// "", tech.kayys.gamelan.grpc.v1.ExecutorService and "liveness" are SERVING
// until Shutdown begins, NOT_SERVING from then on (an open Watch is told,
// then ended with codes.Unavailable); other names are NOT_FOUND.
//
// Lifecycle. Start serves a new grpc.Server on a listener; Stop is a hard
// stop (open streams break, the listener closes) and returns once every
// handler has returned; Shutdown ends open streams with codes.Unavailable,
// then stops gracefully, hard when its context ends first. The queues
// survive a Stop, so the same Server can Start again. Close stops and closes
// the push connections.
//
// Security. Config.ServerOptions passes TLS credentials, interceptors or any
// other grpc.ServerOption through; Config.Auth verifies every call but the
// health service's and refuses a failure with codes.Unauthenticated
// (counted by Refused).
// BearerToken reads the "authorization: Bearer ..." metadata for it. Push
// dials in plaintext unless Config.PushDialOptions says otherwise.
//
// The keepalive policy is grpc-go's default (a client ping at most every 5
// minutes, none without an open call), the policy grpc-java and gRPC C-core
// servers default to as well, so that executors meet what a real engine
// permits. Every method is safe for concurrent use, and the Server never
// calls its Handler while holding a lock of its own.
package grpcengine
