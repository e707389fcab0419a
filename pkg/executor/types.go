package executor

import "github.com/gamelan-go/executor/internal/domain"

// The types a handler sees. They are aliases: values pass to and from the
// runtime unchanged.
type (
	// Executor is the interface a handler implements; see domain.Executor.
	Executor = domain.Executor
	// Task is one unit of work; Context holds its input variables.
	Task = domain.Task
	// TraceContext is the W3C trace context a task came with (Task.Trace,
	// nil when none); handlers reach the trace through Span and Logger.
	TraceContext = domain.TraceContext
	// Result is a task's outcome; build it with Success or Failure.
	Result = domain.Result
	// ErrorInfo describes a failure inside a Result.
	ErrorInfo = domain.ErrorInfo
	// Descriptor declares an executor type.
	Descriptor = domain.Descriptor
	// RateLimit bounds how many tasks of a type start per second
	// (Descriptor.RateLimit; GAMELAN_EXECUTOR_RATE_LIMITS overrides it).
	RateLimit = domain.RateLimit
	// Status is a result's status.
	Status = domain.Status
	// CommunicationType is how the engine reaches an executor type.
	CommunicationType = domain.CommunicationType
	// Error is a failure with a code and a retryable flag.
	Error = domain.Error

	// Initializer runs once before the first task.
	Initializer = domain.Initializer
	// Cleaner runs once after the last task.
	Cleaner = domain.Cleaner
	// BeforeExecuteHook runs before every task; an error fails the task.
	BeforeExecuteHook = domain.BeforeExecuteHook
	// AfterExecuteHook runs after every task with its result.
	AfterExecuteHook = domain.AfterExecuteHook
	// ErrorHook may turn a returned error or panic into a result of its own.
	ErrorHook = domain.ErrorHook
)

// Statuses.
const (
	StatusCompleted = domain.StatusCompleted
	StatusFailed    = domain.StatusFailed
	StatusCancelled = domain.StatusCancelled
	StatusSkipped   = domain.StatusSkipped
)

// Communication types.
const (
	GRPC  = domain.CommunicationGRPC
	Kafka = domain.CommunicationKafka
	REST  = domain.CommunicationREST
)

// Error codes the runtime uses; handlers add their own business codes.
const (
	CodeInvalidInput    = domain.CodeInvalidInput
	CodeInvalidTask     = domain.CodeInvalidTask
	CodeNoExecutor      = domain.CodeNoExecutor
	CodeTimeout         = domain.CodeTimeout
	CodeCancelled       = domain.CodeCancelled
	CodePanic           = domain.CodePanic
	CodeExecutionError  = domain.CodeExecutionError
	CodeShutdown        = domain.CodeShutdown
	CodeOutputTooLarge  = domain.CodeOutputTooLarge
	CodeResultRejected  = domain.CodeResultRejected
	CodeHandlersStalled = domain.CodeHandlersStalled
)
