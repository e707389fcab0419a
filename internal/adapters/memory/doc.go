// Package memory is the in-process implementation of every port: a Backend
// that stands in for the workflow engine, and the four adapters that talk to
// it (TaskSource, ResultSink, Registrar, Heartbeater).
//
// It exists for three uses:
//   - the reference implementation that the contract suites in pkg/porttest
//     are checked against, so that the suites themselves are known to pass on
//     a correct adapter;
//   - component tests of the runtime, which drive the engine side (Submit,
//     Cancel, WaitForResults, Registrations, Heartbeats) and inject faults
//     (FailDeliveries, FailRegistrations, FailHeartbeats, Forget);
//   - the dev mode of the service, GAMELAN_EXECUTOR_TRANSPORT=memory and
//     GAMELAN_EXECUTOR_REGISTRAR=memory, where no engine runs at all.
//
// Guarantees:
//   - Every method of the Backend and of the adapters is safe for concurrent
//     use.
//   - The TaskSource offers a task only after Intake.AwaitCapacity reported
//     room, offers each queued task to one source at a time, and never holds
//     more than the one task it is offering: the backlog stays in the
//     engine's queue. A task the runtime refuses as overloaded, or gives
//     back through Settle with an error, goes back to the front of the queue
//     and is delivered again (Delivery.Redeliverable is true, as with
//     uncommitted Kafka offsets). A task refused as invalid is dropped and
//     recorded in Rejected. After ErrDraining the source stops offering.
//   - When TaskSource.Stop returns, the source's goroutine has ended: no
//     further Offer is made and nothing more is taken from the queue.
//     Start's context bounds only starting: delivery then runs until Stop.
//   - Settle is honoured until Close. TaskSource.Close puts the tasks the
//     source offered and the runtime has not settled back at the front of
//     the queue, as a broker does with the uncommitted records of a consumer
//     that left its group, and ignores their Settle from then on.
//   - Deliver, Register and Heartbeat record deep copies of what they are
//     given (maps and slices included), so callers may reuse their values.
//     They fail, recording nothing, when their context has ended or a fault
//     was injected; injected faults wrap ErrInjected. HoldDeliveries makes
//     Deliver wait unanswered, as an engine that hangs, until released or
//     until its context ends.
//   - The engine deduplicates results on (run id, node id, attempt) like
//     Gamelan: UniqueResults keeps the first result per key, Results keeps
//     every delivery.
//
// Records are kept in memory: each history (results, heartbeats of one
// executor, acknowledged and rejected tasks, unregistrations, violations)
// holds the most recent DefaultHistoryLimit entries unless WithHistoryLimit
// says otherwise, so that a long dev session stays bounded. The task queue is
// the engine's backlog and is not bounded: Submit never refuses.
package memory
