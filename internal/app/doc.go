// Package app is the application core: the Runtime that turns tasks from
// TaskSources into results on ResultSinks, with registration and heartbeats
// through the Registrar and Heartbeater ports. It imports only
// internal/domain and internal/ports; adapters never import it.
//
// The semantics (docs/architecture.md walks one task through them), in the
// order a task meets them:
//
//   - Intake (intake.go): a source offers a task through its Intake. Offer
//     never blocks: it returns ErrOverloaded when workers+queue are all
//     taken, or when the transport's results back up in its outbox (the
//     source stops reading or answers 503), ErrDraining while stopping, and
//     ErrInvalidTask for an invalid task (domain.Task.Validate) that the
//     source can refuse or that no result could name; an invalid pulled
//     task that a result can name is taken and answered FAILED INVALID_TASK.
//   - Dedupe: tasks are keyed "runId:nodeId:attempt". A duplicate of a task in
//     flight is not run again; it is settled when the original's result is
//     acknowledged. A duplicate of a finished task gets the same result again.
//   - Routing (route): the declared types (executor type, node type,
//     context.__node_type__) decide; the executor id the task was sent to is
//     a hint used when it agrees; a contradiction, or no match, is answered
//     FAILED NO_EXECUTOR.
//   - Capacity (scheduler.go): Workers goroutines run tasks; at most
//     Workers+QueueSize tasks are admitted at once; each executor type runs
//     at most its MaxConcurrentTasks at a time, its other tasks waiting in
//     its own queue while other types proceed. A handler that ignores its
//     deadline keeps its slot until it returns; a type whose every slot is
//     so held answers its tasks HANDLERS_STALLED. A type with adaptive
//     concurrency (adaptive.go) runs at most a limit between 1 and its
//     MaxConcurrentTasks that follows its handlers' latency and retryable
//     failures.
//   - Execution (invoke.go, worker.go): a worker runs each handler on its
//     own goroutine; timeout, engine cancellation, panic recovery, error
//     codes, bounded error messages, hooks; a handler that ignores its
//     context is abandoned by the worker's watchdog, and a new worker takes
//     the worker's place.
//   - Delivery (outbox.go): results go through an outbox per transport and
//     are resent with backoff until the sink acknowledges them; only then is
//     the task settled (Kafka commits its offset). A result refused for good
//     is isolated, replaced by its minimal FAILED form, or dead-lettered.
//   - Control plane (control.go): register every hosted type before intake
//     starts, heartbeat with jitter, register again on signs that the engine
//     forgot the executors (a failed heartbeat, a remade connection) and
//     periodically.
//   - Stop (runtime.go): not ready, stop intake, hand back unstarted
//     redeliverable tasks, drain the rest up to DrainTimeout (then cancel
//     them: SHUTDOWN), flush results up to FlushTimeout, close the sources
//     (every delivery is settled or given up by then: a source honours
//     Settle until Close), unregister, run Cleanup hooks.
//
// A task's lifecycle (offered, queued or answered, running, finished,
// settled) is one typed stage per job, moved only by the task table's
// methods in lifecycle.go, which check every move; docs/architecture.md
// ("The task lifecycle") draws it.
package app
