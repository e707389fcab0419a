// Package devengine is the reference engine: the engine side of docs/protocol.md,
// complete, so that the executor service runs end to end on one machine and
// its tests exercise real transports. It is not a workflow engine: it runs
// single tasks submitted through its HTTP API.
//
// The protocol itself is spoken by internal/engine, the engine side shared
// with the adapters' test harnesses: grpcengine (the ExecutorService, task
// streams and their flow control, cancellations, push), restengine (the
// REST registry's routes, REST dispatch) and kafkaengine (the embedded
// broker and its topics, the task producer, the consumer of what executors
// write). This package is what an engine does with it:
//
//   - Registry: executors register over gRPC (ExecutorService), HTTP (the
//     REST registry) or the Kafka registration topic. Registration is
//     idempotent; a heartbeat from an unknown executor answers "not found",
//     so that the executor registers again (unlike Gamelan, which answers
//     success). An executor whose heartbeats stop is marked unhealthy after
//     the expiry threshold and removed after twice that; the tasks it held
//     are reassigned (at least once). A heartbeat with status DRAINING
//     stops new tasks going to the executor until another status comes.
//   - Dispatch: a task goes to a healthy executor of its executor type (or
//     supporting its node type), the least loaded relative to its max
//     concurrent tasks, never above that maximum. Delivery follows the
//     executor's communication type: gRPC (an open ExecuteStream or
//     StreamTasks stream if the executor has one, else push Execute), Kafka
//     (workflow.tasks, targetExecutor set), REST (POST to its endpoint).
//     A task for an executor with open streams is queued on them at
//     dispatch, and an executor is given no more tasks than its StreamTasks
//     streams have room for (their max_concurrent, less the tasks they hold
//     unanswered). When the last stream of an executor closes, the tasks it
//     never sent are queued again at once; those a stream sent, once their
//     results are overdue (their timeout and a grace).
//   - Tasks: Submit (POST /api/v1/tasks) refuses, with a 400, a node id
//     that breaks Gamelan's id rules (^[a-zA-Z0-9_-]{1,255}$, which
//     executors enforce) and a context JSON cannot carry; a context is kept
//     as JSON carries it, so that every transport delivers it whole.
//   - Results arrive through ReportResults, ExecuteStream and the results
//     topic, deduplicated on (run id, node id, attempt), and are recorded
//     with status, output, error and latency. A result with a status other
//     than COMPLETED, FAILED, CANCELLED or SKIPPED, or without the task's
//     execution token, is refused and counted.
//   - Retention: the engine keeps every task not yet final and at most
//     Config.RetainFinished final ones (100000), forgetting the first to
//     finish first. The task API answers 404 for a forgotten task, the
//     summary no longer counts it, and a late result of it counts as
//     unknown. The periodic work (expiry, overdue results) visits only
//     the assigned tasks it concerns, never final ones.
//   - Security: when a secret is set, every inbound executor call (gRPC
//     metadata, HTTP header, Kafka record header) must carry a valid token
//     issued by the executor side (DEVENGINE_EXECUTOR_ISSUER) for the
//     engine (its aud, DEVENGINE_EXECUTOR_AUDIENCE, gamelan-engine by
//     default: the executors' GAMELAN_EXECUTOR_JWT_AUDIENCE); refusals are
//     counted. A Kafka record's token is checked as of the record's
//     timestamp (no further back than KafkaConfig.TokenLag), so that
//     records read late still count, and must name the executor the record
//     speaks for.
//     Tasks the engine delivers carry its own token. The engine's gRPC
//     server admits executors' keepalive pings (every 5s at most).
//   - Tracing: with Config.TracerProvider set, each task gets a
//     "dispatch <executor type>" producer span from its first delivery
//     until its result arrives; its W3C trace context goes with the task
//     (push metadata, the reserved __traceparent__/__tracestate__/
//     __baggage__ keys of a streamed task's context, Kafka and REST
//     headers), and the trace context the result carries back (call
//     metadata, output keys, result record headers) is recorded on the
//     span as a link and attributes. Off (nil) adds nothing to a task.
package devengine
