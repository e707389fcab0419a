// Package devengine is the reference engine: the engine side of PROTOCOL.md,
// complete, so that the executor service runs end to end on one machine and
// its tests exercise real transports. It is not a workflow engine: it runs
// single tasks submitted through its HTTP API.
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
//     A StreamTasks stream holds at most its request's max_concurrent
//     unanswered tasks. When a stream closes, the tasks it never sent are
//     queued again at once, and those it sent once their results are
//     overdue (their timeout and a grace).
//   - Results arrive through ReportResults, ExecuteStream and the results
//     topic, deduplicated on (run id, node id, attempt), and are recorded
//     with status, output, error and latency. A result with a status other
//     than COMPLETED, FAILED, CANCELLED or SKIPPED, or without the task's
//     execution token, is refused and counted.
//   - Security: when a secret is set, every inbound executor call (gRPC
//     metadata, HTTP header, Kafka record header) must carry a valid token
//     issued by the executor side; refusals are counted. A Kafka record's
//     token is checked as of the record's timestamp (no further back than
//     KafkaConfig.TokenLag), so that records read late still count, and
//     must name the executor the record speaks for.
//     Tasks the engine delivers carry its own token. The engine's gRPC
//     server admits executors' keepalive pings (every 5s at most).
package devengine
