package domain

import (
	"fmt"
	"time"
)

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

// TooLarge returns r as a FAILED OUTPUT_TOO_LARGE result without output or
// error details, for a transport that cannot carry r's size bytes in one
// message of at most limit bytes. The identity, timing and original status
// (in the message) are kept, so the engine still gets an answer for the
// task rather than none.
func (r Result) TooLarge(size, limit int) Result {
	r.Output = nil
	r.Error = &ErrorInfo{
		Code: CodeOutputTooLarge,
		Message: fmt.Sprintf("the %s result was %d bytes, more than the transport's limit of %d; output dropped",
			r.Status, size, limit),
	}
	r.Status = StatusFailed
	return r
}
