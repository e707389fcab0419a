package ports

import (
	"context"

	"github.com/gamelan-go/executor/internal/domain"
)

// TaskSource delivers tasks from the engine (or a broker) to the runtime.
//
// The source must respect the runtime's flow control: it offers a task only
// through Intake.Offer, which never blocks, and it waits on
// Intake.AwaitCapacity (pull sources: stop fetching, pause partitions) or
// refuses the engine (push sources: 503) when the runtime is full. It never
// buffers tasks without bound.
type TaskSource interface {
	// Start begins delivering tasks to intake and returns once the source is
	// serving; delivery continues in the background until Stop. Start is
	// called once. An error means the source could not start at all; later
	// connection failures are retried by the source and reported through the
	// optional HealthReporter.
	Start(ctx context.Context, intake Intake) error
	// Stop ends intake: when it returns, the source makes no further Offer
	// (or AwaitCapacity) calls, and push sources refuse new tasks with 503.
	// Stop also ends reading: a stopped source takes nothing more from the
	// engine or broker, and lets a successor (another source of the same
	// queue, topic or consumer group) take over what it did not take (a
	// Kafka source leaves its group at the next rebalance). Tasks already
	// offered stay valid: Settle is honoured until Close. Stop is idempotent
	// and safe to call without Start.
	Stop(ctx context.Context) error
	// Close releases the source: Settle is honoured until Close. A Settle
	// that runs after Stop and before Close is honoured as at any other time
	// (the task is committed or acknowledged, or handed back); once Close has
	// returned, nothing is: a Settle callback still returns at once, but a
	// task not settled by then stays the engine's or the broker's (a
	// redelivering source leaves it to be delivered again: Kafka leaves its
	// offset uncommitted to the group, the memory engine requeues it). Close
	// stops the source first if it was not stopped, frees what it holds (the
	// consumer group, the listener of a push server, waiting for calls in
	// progress until ctx ends, then cutting them short) and returns ctx's
	// cause if ctx ended before it was done. The runtime calls it once it has
	// settled every delivery or given up at its deadline. Close is idempotent
	// and safe to call without Start.
	Close(ctx context.Context) error
}

// Intake is the runtime's side of a TaskSource. It is implemented by the
// runtime and is safe for concurrent use.
type Intake interface {
	// Offer hands one task to the runtime without blocking. It returns nil
	// when the runtime has taken responsibility for the task: the runtime
	// will call d.Settle exactly once. It returns an error wrapping
	// domain.ErrOverloaded when full (or when this transport's results are
	// not being acknowledged, so that its own intake slows down and no
	// other's), domain.ErrDraining when shutting down, or
	// domain.ErrInvalidTask when the task is refused as invalid; then Settle
	// is never called and the source keeps ownership.
	//
	// Invalid tasks (domain.Task.Validate, or d.Malformed) are refused when
	// d.Refusable is set or when no result could name them
	// (domain.Task.Addressable); otherwise the runtime takes them and
	// answers them FAILED INVALID_TASK through the transport's sink, like
	// any other result. A valid task that no hosted executor may run is
	// taken and answered FAILED NO_EXECUTOR.
	Offer(ctx context.Context, d Delivery) error
	// AwaitCapacity blocks until the runtime can take at least one more task
	// and returns how many it could take now. It returns ctx's error when
	// ctx ends, and domain.ErrDraining once the runtime is shutting down (a
	// source then stops offering). The figure is a hint: another source may
	// take the room before Offer.
	AwaitCapacity(ctx context.Context) (int, error)
	// Cancel asks the runtime to cancel the task with the given task id (or
	// idempotency key). A running handler's context is cancelled; a queued
	// task is not started. Either way the task is answered CANCELLED. Cancel
	// reports whether a task was found.
	Cancel(taskID, reason string) bool
}

// Delivery is one task offered by a TaskSource, with the callback through
// which the runtime tells the source that it is done with it.
type Delivery struct {
	Task *domain.Task
	// Settle is called exactly once after a successful Offer. A nil error
	// means the task's result was acknowledged by the ResultSink (or the
	// task was a duplicate of one whose result was): Kafka sources commit
	// the offset here. An error wrapping domain.ErrUndeliverable means the
	// result could never be delivered and was dead-lettered: the task is
	// done with too (commit it), since delivering it again would only fail
	// again. Any other error (wrapping domain.ErrHandedBack) means the
	// runtime gave the task back without a delivered result, and a
	// redelivering source should deliver it again. The source honours Settle
	// until it is closed (TaskSource.Close), after Stop too. Settle must not
	// block for long; it may be nil.
	Settle func(err error)
	// Redeliverable reports that the source delivers a handed-back task
	// again (Kafka re-reads uncommitted offsets). When false, the runtime
	// answers a task it must abandon with a retryable FAILED SHUTDOWN result
	// instead, so that the engine learns of it.
	Redeliverable bool
	// Refusable reports that the engine waits for the source's own answer
	// to this delivery (a push ack, an HTTP response), so that an invalid
	// task is refused there (400) rather than answered with a result.
	Refusable bool
	// Malformed, when set, says why the source could not decode the task:
	// Task then holds only the identity the source could recover, and the
	// runtime answers it FAILED INVALID_TASK (or refuses it, see Offer)
	// without running anything.
	Malformed error
}

// HealthReporter is implemented by sources whose connection to the engine can
// be down while the process is up (a gRPC stream, a Kafka consumer). The
// readiness probe reports not ready while Healthy returns an error.
type HealthReporter interface {
	Healthy() error
}

// ResultSink delivers results to the engine.
type ResultSink interface {
	// Deliver sends a batch of results and returns nil only when the engine
	// or broker has acknowledged every one of them (a ReportResults stream
	// answered with Empty, a Kafka produce with acks=all). On error, some,
	// all or none may have been delivered: the caller resends the batch, and
	// the engine deduplicates on (run id, node id, attempt), so delivering a
	// result twice is safe. An error wrapping domain.ErrResultRejected says
	// that the engine or broker refused the batch for good (a message too
	// large for it, an invalid argument): the caller does not resend it as
	// it is, but isolates the result at fault. Any other error is transient
	// and the batch is resent with backoff. Deliver is safe for concurrent
	// use and returns promptly with an error when ctx ends.
	Deliver(ctx context.Context, results []domain.Result) error
}

// Registrar tells the engine which executor types this process hosts.
type Registrar interface {
	// Register registers one executor type. It is idempotent: registering
	// the same executor id again refreshes the registration. It returns nil
	// only once the engine has accepted it. Safe for concurrent use.
	Register(ctx context.Context, reg domain.Registration) error
	// Unregister removes the executor id from the engine. Unregistering an
	// id the engine does not know is not an error.
	Unregister(ctx context.Context, executorID string) error
}

// Heartbeater reports an executor's liveness and load to the engine.
type Heartbeater interface {
	// Heartbeat sends one heartbeat. An error means the engine may have
	// forgotten the executor (it wraps domain.ErrNotRegistered when the
	// engine said so) and the runtime re-registers. Safe for concurrent use.
	Heartbeat(ctx context.Context, hb domain.Heartbeat) error
}

// RegistrationWatcher is implemented by adapters that can see signs that
// the engine may have forgotten this process's executors: the connection to
// it remade after it was lost (a restarted engine forgets its executors,
// and may still answer their heartbeats with success), an answer saying an
// executor is unknown. On each sign the runtime registers every type again,
// and reports not ready until the engine has accepted the registrations.
// Any port may implement it; the runtime listens to each distinct channel.
type RegistrationWatcher interface {
	// RegistrationSuspects returns a channel that receives a reason for
	// each sign. The channel is the same on every call and is never closed.
	RegistrationSuspects() <-chan string
}
