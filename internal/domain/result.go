package domain

import "time"

// Status is the outcome of a task as the engine reads it.
type Status string

// The statuses a result may carry. The Gamelan engine counts only
// StatusCompleted as success.
const (
	StatusCompleted Status = "COMPLETED"
	StatusFailed    Status = "FAILED"
	StatusCancelled Status = "CANCELLED"
	StatusSkipped   Status = "SKIPPED"
)

// Valid reports whether s is one of the four statuses a result may carry.
func (s Status) Valid() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusSkipped:
		return true
	}
	return false
}

// ErrorInfo describes why a task did not complete.
type ErrorInfo struct {
	// Code is a stable, machine-readable code such as TIMEOUT or INVALID_INPUT.
	Code string
	// Message is for humans.
	Message string
	// StackTrace is set for panics and, when available, for errors.
	StackTrace string
	// Context carries structured details (for example the offending input).
	Context map[string]any
	// Retryable tells the engine whether running the task again may succeed.
	Retryable bool
}

// Result is the outcome of one task, addressed to the engine by the task's
// identity (RunID, NodeID, Attempt, ExecutionToken) exactly as received.
type Result struct {
	TaskID         string
	RunID          string
	NodeID         string
	Attempt        int
	ExecutionToken string
	// ExecutorID is the id of the executor that produced the result.
	ExecutorID string
	Status     Status
	// Output is the task's output on success (and may be set on failure).
	Output map[string]any
	// Error is set when Status is not COMPLETED or SKIPPED.
	Error       *ErrorInfo
	CompletedAt time.Time
	// Duration is how long the handler ran.
	Duration time.Duration
}

// Key returns the "runId:nodeId:attempt" key the engine deduplicates on.
func (r *Result) Key() string {
	return IdempotencyKey(r.RunID, r.NodeID, r.Attempt)
}

// ResultFor returns a result addressed to t with the given status. TaskID
// falls back to t.Key() when the engine sent no task id.
func ResultFor(t *Task, status Status) Result {
	return Result{
		TaskID:         t.ID(),
		RunID:          t.RunID,
		NodeID:         t.NodeID,
		Attempt:        t.Attempt,
		ExecutionToken: t.ExecutionToken,
		Status:         status,
	}
}
