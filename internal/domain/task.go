package domain

import (
	"fmt"
	"strconv"
	"time"
)

// NodeTypeKey is the context entry an engine may use to name the node type of
// a task when the transport has no field for it (Gamelan's push request).
const NodeTypeKey = "__node_type__"

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
	// NodeType is the node's type, used for routing when ExecutorType is empty.
	NodeType string
	// ExecutorType names the executor type the engine chose, when it says.
	ExecutorType string
	// ExecutorID is the executor id the engine chose, when it says (recovered
	// from a push signature or a Kafka targetExecutor).
	ExecutorID string
	// Attempt is the engine's attempt number for this node in this run.
	Attempt int
	// ExecutionToken is opaque to the executor and returned with the result.
	ExecutionToken string
	// IdempotencyKey is the engine's idempotency key; when empty Key derives
	// one from RunID, NodeID and Attempt.
	IdempotencyKey string
	// Context holds the task's input variables.
	Context map[string]any
	// Configuration holds the node's static configuration.
	Configuration map[string]any
	// Timeout bounds the handler's run; zero means the runtime's default.
	Timeout time.Duration
	// ScheduledAt is when the engine scheduled the task, when known.
	ScheduledAt time.Time
}

// Key returns the idempotency key of the task: IdempotencyKey when the engine
// sent one, else "runId:nodeId:attempt".
func (t *Task) Key() string {
	if t.IdempotencyKey != "" {
		return t.IdempotencyKey
	}
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

// Validate reports whether the task carries what every result needs: a run
// id, a node id and a non-negative attempt. The error wraps ErrInvalidTask.
func (t *Task) Validate() error {
	switch {
	case t.RunID == "":
		return fmt.Errorf("%w: run id is empty", ErrInvalidTask)
	case t.NodeID == "":
		return fmt.Errorf("%w: node id is empty", ErrInvalidTask)
	case t.Attempt < 0:
		return fmt.Errorf("%w: attempt %d is negative", ErrInvalidTask, t.Attempt)
	case t.Timeout < 0:
		return fmt.Errorf("%w: timeout %s is negative", ErrInvalidTask, t.Timeout)
	case t.Timeout > MaxTimeout:
		return fmt.Errorf("%w: timeout is more than %d seconds (365 days)", ErrInvalidTask, int64(MaxTimeout/time.Second))
	}
	return nil
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
