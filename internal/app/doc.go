// Package app is the application core: the Runtime that turns tasks from
// TaskSources into results on ResultSinks, with registration and heartbeats
// through the Registrar and Heartbeater ports. It imports only
// internal/domain and internal/ports; adapters never import it.
//
// The semantics (DESIGN.md, "Runtime semantics"), in the order a task meets
// them:
//
//   - Intake: a source offers a task through its Intake. Offer never blocks:
//     it returns ErrOverloaded when workers+queue are all taken (the source
//     stops reading or answers 503), ErrDraining while stopping, and
//     ErrInvalidTask for a task with no run or node id.
//   - Dedupe: tasks are keyed "runId:nodeId:attempt". A duplicate of a task in
//     flight is not run again; it is settled when the original's result is
//     acknowledged. A duplicate of a finished task gets the same result again.
//   - Routing: executor id, else executor type, else node type, else
//     context.__node_type__, else a node id equal to a supported node type,
//     else the only executor type served by the task's transport. No match:
//     FAILED NO_EXECUTOR.
//   - Capacity: Workers goroutines run tasks; at most Workers+QueueSize tasks
//     are admitted at once; each executor type runs at most its
//     MaxConcurrentTasks at a time, its other tasks waiting in its own queue
//     while other types proceed.
//   - Execution (Invoke): timeout, engine cancellation, panic recovery, error
//     codes, hooks.
//   - Delivery: results go through a bounded outbox per transport and are
//     resent with backoff until the sink acknowledges them; only then is the
//     task settled (Kafka commits its offset).
//   - Control plane: register every hosted type before intake starts,
//     heartbeat with jitter, re-register after a failed heartbeat, after a
//     successful one while the last registration attempt failed, and
//     periodically.
//   - Stop: not ready, stop intake, hand back unstarted redeliverable tasks,
//     drain the rest up to DrainTimeout (then cancel them: SHUTDOWN), flush
//     results up to FlushTimeout, unregister, run Cleanup hooks.
package app
