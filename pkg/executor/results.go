package executor

import (
	"errors"
	"fmt"

	"github.com/gamelan-go/executor/internal/domain"
)

// Success returns a COMPLETED result with the given output. The runtime fills
// in the task's identity, timing and completion time.
func Success(output map[string]any) *Result {
	return &Result{Status: StatusCompleted, Output: output}
}

// Failure returns a FAILED result with a business code and message; the
// engine reads it as permanent (running the task again would fail again).
func Failure(code, message string) *Result {
	return &Result{Status: StatusFailed, Error: &ErrorInfo{Code: code, Message: message}}
}

// FailureWithContext is Failure with structured details for the engine, for
// example the offending input.
func FailureWithContext(code, message string, details map[string]any) *Result {
	r := Failure(code, message)
	r.Error.Context = details
	return r
}

// RetryableFailure returns a FAILED result that the engine may retry, for
// transient conditions such as an unavailable downstream service.
func RetryableFailure(code, message string) *Result {
	r := Failure(code, message)
	r.Error.Retryable = true
	return r
}

// Skipped returns a SKIPPED result: the task had nothing to do.
func Skipped(output map[string]any) *Result {
	return &Result{Status: StatusSkipped, Output: output}
}

// Fail returns a permanent error with a code. Returned from Execute, it
// becomes a FAILED result with that code; returned from an operation under
// Retry, it stops the retries.
func Fail(code, format string, args ...any) error {
	return domain.Errorf(code, format, args...)
}

// Retryable returns an error with a code that the engine may retry, and that
// Retry retries.
func Retryable(code string, err error) error {
	return &domain.Error{Code: code, Message: "", Retryable: true, Err: err}
}

// Permanent marks err so that Retry stops at once and the runtime reports it
// as not retryable. It keeps err's code when err carries one.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := domain.AsError(err); ok {
		c := *e
		c.Retryable = false
		if c.Err == nil && c.Message == "" {
			c.Err = err
		}
		return &c
	}
	return &domain.Error{Code: CodeExecutionError, Err: err}
}

// isPermanent reports whether err asks Retry to stop: an *Error in the
// chain whose Retryable flag is false.
func isPermanent(err error) bool {
	var e *domain.Error
	return errors.As(err, &e) && !e.Retryable
}

// errMissing and friends phrase input errors the same way in every handler.
func errMissing(key string) error { return fmt.Errorf("%q is missing", key) }
