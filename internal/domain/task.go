package domain

import (
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// NodeTypeKey is the context entry an engine may use to name the node type of
// a task when the transport has no field for it (Gamelan's push request).
const NodeTypeKey = "__node_type__"

// Limits on what a task may carry. Run, node and executor ids follow the
// Gamelan engine's own rule (ValidID). The attempt is the engine's 32-bit
// attempt number, counted from 1. Task ids and execution tokens are opaque,
// but every result echoes them, so they are bounded too: a task whose
// identity could not fit in a result is refused rather than answered with a
// result no transport can carry.
const (
	// MaxAttempt is the largest attempt number: the engine's is a 32-bit int.
	MaxAttempt = math.MaxInt32
	// MaxTaskIDBytes bounds the engine's task id.
	MaxTaskIDBytes = 1024
	// MaxExecutionTokenBytes bounds the engine's execution token.
	MaxExecutionTokenBytes = 64 << 10
)

// Task is one unit of work handed to an executor by the engine.
//
// RunID, NodeID and Attempt identify a task across redeliveries; the engine
// deduplicates results on them, and the runtime deduplicates tasks on Key.
type Task struct {
	// TaskID is the engine's id for the task. Empty when the transport does
	// not carry one; Key is used in its place.
	TaskID string
	// RunID is the workflow run the task belongs to. Required.
	RunID string
	// NodeID is the workflow node the task executes. Required.
	NodeID string
	// NodeName is the node's display name, when known.
	NodeName string
	// NodeType is the node's type: a declared type, used for routing.
	NodeType string
	// ExecutorType names the executor type the engine chose, when it says:
	// the most specific declared type.
	ExecutorType string
	// ExecutorID is the executor id the engine sent the task to, when the
	// transport says (a push signature, the stream it came on, a Kafka
	// targetExecutor, a REST X-Executor-Id). It is a routing hint, never a
	// declared type: see the routing rule in the runtime.
	ExecutorID string
	// Attempt is the engine's attempt number for this node in this run,
	// from 1 to MaxAttempt.
	Attempt int
	// ExecutionToken is opaque to the executor and returned with the result.
	ExecutionToken string
	// IdempotencyKey is the key the engine sent, if any. It must equal
	// "runId:nodeId:attempt" (Validate refuses any other): a key that does
	// not name the task's own identity would let one run's task be answered
	// with another run's result.
	IdempotencyKey string
	// Context holds the task's input variables.
	Context map[string]any
	// Configuration holds the node's static configuration.
	Configuration map[string]any
	// Timeout bounds the handler's run; zero means the runtime's default.
	Timeout time.Duration
	// ScheduledAt is when the engine scheduled the task, when known.
	ScheduledAt time.Time
	// Trace is the trace context the engine sent with the task, nil when it
	// sent none (see TraceContext). A pointer, so that a task without one
	// carries 8 bytes for it; it is never changed once set, and a result
	// shares its task's.
	Trace *TraceContext
}

// Key returns the "runId:nodeId:attempt" key the engine and the runtime
// deduplicate on. It is derived from the identity, never taken from
// IdempotencyKey, which Validate checks against it.
func (t *Task) Key() string {
	return IdempotencyKey(t.RunID, t.NodeID, t.Attempt)
}

// ID returns TaskID, or Key when the engine sent no task id.
func (t *Task) ID() string {
	if t.TaskID != "" {
		return t.TaskID
	}
	return t.Key()
}

// IdempotencyKey builds the "runId:nodeId:attempt" key the engine and the
// runtime deduplicate on.
func IdempotencyKey(runID, nodeID string, attempt int) string {
	return runID + ":" + nodeID + ":" + strconv.Itoa(attempt)
}

// Validate reports the first rule the task breaks, the same on every
// transport: run and node ids (and the executor id, when given) as the
// engine validates them (ValidID), an attempt from 1 to MaxAttempt, an
// idempotency key that is absent or equal to "runId:nodeId:attempt", a task
// id and execution token within their bounds, and a timeout from 0 to
// MaxTimeout. The error wraps ErrInvalidTask and quotes offending values
// clipped to a few dozen bytes, so that it can be logged and answered.
func (t *Task) Validate() error {
	switch {
	case t.RunID == "":
		return fmt.Errorf("%w: run id is empty", ErrInvalidTask)
	case !ValidID(t.RunID):
		return fmt.Errorf("%w: run id %s %s", ErrInvalidTask, Quote(t.RunID), idRule)
	case t.NodeID == "":
		return fmt.Errorf("%w: node id is empty", ErrInvalidTask)
	case !ValidID(t.NodeID):
		return fmt.Errorf("%w: node id %s %s", ErrInvalidTask, Quote(t.NodeID), idRule)
	case t.ExecutorID != "" && !ValidID(t.ExecutorID):
		return fmt.Errorf("%w: executor id %s %s", ErrInvalidTask, Quote(t.ExecutorID), idRule)
	case t.Attempt < 1 || t.Attempt > MaxAttempt:
		return fmt.Errorf("%w: attempt %d is not between 1 and %d", ErrInvalidTask, t.Attempt, MaxAttempt)
	case t.IdempotencyKey != "" && t.IdempotencyKey != t.Key():
		return fmt.Errorf("%w: idempotency key %s is not %s (runId:nodeId:attempt)", ErrInvalidTask, Quote(t.IdempotencyKey), Quote(t.Key()))
	case len(t.TaskID) > MaxTaskIDBytes || !utf8.ValidString(t.TaskID):
		return fmt.Errorf("%w: task id %s is not UTF-8 text of at most %d bytes", ErrInvalidTask, Quote(t.TaskID), MaxTaskIDBytes)
	case len(t.ExecutionToken) > MaxExecutionTokenBytes:
		return fmt.Errorf("%w: execution token of %d bytes is longer than %d", ErrInvalidTask, len(t.ExecutionToken), MaxExecutionTokenBytes)
	case t.Timeout < 0:
		return fmt.Errorf("%w: timeout %s is negative", ErrInvalidTask, t.Timeout)
	case t.Timeout > MaxTimeout:
		return fmt.Errorf("%w: timeout is more than %d seconds (365 days)", ErrInvalidTask, int64(MaxTimeout/time.Second))
	}
	return nil
}

const idRule = "is not 1-255 letters, digits, '_' or '-'"

// Addressable reports whether a result can be addressed to the task as it
// was received, even though the task itself may be invalid: its run and node
// ids are valid, its attempt fits the engine's 32-bit field, and its task id
// and execution token fit in a result. A pulled task that is invalid but
// addressable is answered FAILED INVALID_TASK; any other is only logged,
// since an answer could not name it.
func (t *Task) Addressable() bool {
	return ValidID(t.RunID) && ValidID(t.NodeID) &&
		t.Attempt >= math.MinInt32 && t.Attempt <= MaxAttempt &&
		len(t.TaskID) <= MaxTaskIDBytes && utf8.ValidString(t.TaskID) &&
		len(t.ExecutionToken) <= MaxExecutionTokenBytes
}

// MaxTimeout is the longest task timeout accepted: a larger one is a unit
// mistake, and would overflow a time.Duration soon after.
const MaxTimeout = 365 * 24 * time.Hour

// TimeoutFromSeconds converts a timeout in seconds from the wire without
// overflowing: a value above MaxTimeout comes back above it, a negative one
// negative, and Task.Validate refuses both.
func TimeoutFromSeconds(seconds int64) time.Duration {
	switch {
	case seconds < 0:
		return -time.Second
	case seconds > int64(MaxTimeout/time.Second):
		return MaxTimeout + time.Second
	}
	return time.Duration(seconds) * time.Second
}
