package domain

import (
	"errors"
	"fmt"
)

// Error codes the runtime puts on FAILED and CANCELLED results. Handlers use
// their own business codes (INVALID_ORDER, ...) beside these.
const (
	// CodeInvalidTask: the task itself is malformed (no run id, bad JSON).
	CodeInvalidTask = "INVALID_TASK"
	// CodeInvalidInput: the task's variables do not fit the handler.
	CodeInvalidInput = "INVALID_INPUT"
	// CodeNoExecutor: no hosted executor type matches the task.
	CodeNoExecutor = "NO_EXECUTOR"
	// CodeTimeout: the handler ran past the task's deadline.
	CodeTimeout = "TIMEOUT"
	// CodeCancelled: the engine cancelled the task.
	CodeCancelled = "CANCELLED"
	// CodePanic: the handler panicked; the result carries the stack.
	CodePanic = "PANIC"
	// CodeExecutionError: the handler returned an error without a code.
	CodeExecutionError = "EXECUTION_ERROR"
	// CodeShutdown: the service stopped before the task could finish; the
	// engine may run it again elsewhere.
	CodeShutdown = "SHUTDOWN"
	// CodeOutputTooLarge: the result did not fit in one message of the
	// transport; its output and error details were dropped.
	CodeOutputTooLarge = "OUTPUT_TOO_LARGE"
	// CodeHandlersStalled: every slot of the executor type is held by a
	// handler that ignored its deadline; the task was not run (retryable).
	CodeHandlersStalled = "HANDLERS_STALLED"
	// CodeResultRejected: the engine or broker refused the result for good
	// (an invalid argument, a size its own limit refuses); this minimal
	// FAILED result was sent in its place.
	CodeResultRejected = "RESULT_REJECTED"
)

// Sentinel errors shared by the runtime and the adapters. Adapters translate
// them to transport statuses once, at the edge (ErrOverloaded -> 503, ...).
var (
	// ErrInvalidTask: the task cannot be accepted as it is (HTTP 400).
	ErrInvalidTask = errors.New("invalid task")
	// ErrOverloaded: the runtime is at capacity; try later (HTTP 503).
	ErrOverloaded = errors.New("executor at capacity")
	// ErrDraining: the runtime is shutting down and takes no new tasks (HTTP 503).
	ErrDraining = errors.New("executor is shutting down")
	// ErrClosed: the adapter or runtime has been closed.
	ErrClosed = errors.New("closed")
	// ErrHandedBack: the runtime gave a task back unstarted; its source
	// should redeliver it (Kafka: the offset is not committed).
	ErrHandedBack = errors.New("task handed back unstarted")
	// ErrNotRegistered: the engine does not know the executor (a heartbeat
	// answered "not found"); the runtime re-registers.
	ErrNotRegistered = errors.New("executor not registered with the engine")
	// ErrUnauthenticated: a call's credentials were missing or invalid (HTTP 401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrResultRejected: the engine or broker refused a result for good
	// (too large for it, malformed); sending it again cannot succeed. Result
	// sinks wrap such refusals in it, and the runtime isolates the result
	// instead of retrying.
	ErrResultRejected = errors.New("result refused by the engine")
	// ErrResultTooLarge: a refusal for good because the result is larger
	// than the engine or broker takes. It wraps ErrResultRejected.
	ErrResultTooLarge = fmt.Errorf("%w: too large", ErrResultRejected)
	// ErrUndeliverable: a task's result could not be delivered in any form
	// and was dead-lettered (logged and counted). Its delivery is settled
	// with this error: the source must not deliver the task again, which
	// would only repeat the failure (Kafka commits its offset).
	ErrUndeliverable = errors.New("result undeliverable")
)

// Error is a failure with a code the engine can read and a retryable flag.
// Handlers return it (directly or wrapped) to choose the code of their FAILED
// result; the runtime maps other errors to CodeExecutionError.
type Error struct {
	Code      string
	Message   string
	Retryable bool
	// Context carries structured details, copied into the result's ErrorInfo.
	Context map[string]any
	// Err is the underlying cause, if any.
	Err error
}

// NewError returns a permanent (not retryable) error with a code.
func NewError(code, message string) *Error {
	return &Error{Code: code, Message: message}
}

// Error implements error as "CODE: message: cause".
func (e *Error) Error() string {
	msg := e.Code
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// WithContext returns a copy of e carrying the given details.
func (e *Error) WithContext(details map[string]any) *Error {
	c := *e
	c.Context = details
	return &c
}

// AsError finds an *Error in err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// Errorf returns a permanent *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
