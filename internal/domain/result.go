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
	// Trace is the trace context the result carries back to the engine:
	// its task's as received, or, when tracing is on, the executor's span
	// of the task (a child of the engine's). Transports put it where the
	// task brought it (see TraceContext).
	Trace *TraceContext
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
		Trace:          t.Trace,
	}
}

// Bounds on what a result's error carries: a handler's message may quote
// its whole input, and every byte of it travels to the engine and to logs.
const (
	MaxErrorMessageBytes = 4 << 10
	MaxStackTraceBytes   = 32 << 10
)

// Bounded returns r with its error message and stack trace clipped to
// MaxErrorMessageBytes and MaxStackTraceBytes. r's ErrorInfo is copied, not
// changed.
func (r Result) Bounded() Result {
	if r.Error == nil || (len(r.Error.Message) <= MaxErrorMessageBytes && len(r.Error.StackTrace) <= MaxStackTraceBytes) {
		return r
	}
	info := *r.Error
	info.Message = Clip(info.Message, MaxErrorMessageBytes)
	info.StackTrace = Clip(info.StackTrace, MaxStackTraceBytes)
	r.Error = &info
	return r
}

// Minimal returns r reduced to its identity, timing and executor, as FAILED
// with the given code and message and nothing else: no output, no error
// context, no stack. It is what is sent in place of a result that a
// transport cannot carry or that the engine refused, so that the engine
// still gets an answer for the task rather than none.
func (r Result) Minimal(code, message string) Result {
	return Result{
		TaskID:         r.TaskID,
		RunID:          r.RunID,
		NodeID:         r.NodeID,
		Attempt:        r.Attempt,
		ExecutionToken: r.ExecutionToken,
		ExecutorID:     r.ExecutorID,
		Status:         StatusFailed,
		Error:          &ErrorInfo{Code: code, Message: Clip(message, MaxErrorMessageBytes)},
		CompletedAt:    r.CompletedAt,
		Duration:       r.Duration,
		Trace:          r.Trace.Bounded(),
	}
}

// TooLarge returns r's Minimal form with code OUTPUT_TOO_LARGE, for a
// transport that cannot carry r's size bytes in one message of at most
// limit bytes. The original status is named in the message.
func (r Result) TooLarge(size, limit int) Result {
	return r.Minimal(CodeOutputTooLarge, fmt.Sprintf("the %s result was %d bytes, more than the transport's limit of %d; output dropped",
		r.Status, size, limit))
}
