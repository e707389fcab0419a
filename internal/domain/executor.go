package domain

import "context"

// Executor is the handler a team writes for one executor type.
//
// Execute runs one task. It returns business outcomes as results (COMPLETED,
// or FAILED with a business code), and returns an error only when it could
// not decide: the runtime turns that error into a FAILED result (the code of
// an *Error in the chain, else EXECUTION_ERROR). Execute must watch ctx: it
// carries the task's deadline and the engine's cancellation. It may be called
// concurrently, up to the descriptor's MaxConcurrentTasks.
type Executor interface {
	Descriptor() Descriptor
	Execute(ctx context.Context, task *Task) (*Result, error)
}

// Initializer is implemented by executors that need set-up before the first
// task (connections, caches). An error stops start-up.
type Initializer interface {
	Initialize(ctx context.Context) error
}

// Cleaner is implemented by executors that release resources on shutdown,
// after the last task has finished.
type Cleaner interface {
	Cleanup(ctx context.Context) error
}

// BeforeExecuteHook is called before each task; an error fails the task
// without running it.
type BeforeExecuteHook interface {
	BeforeExecute(ctx context.Context, task *Task) error
}

// AfterExecuteHook is called after each task with its final result.
type AfterExecuteHook interface {
	AfterExecute(ctx context.Context, task *Task, result *Result)
}

// ErrorHook is called when BeforeExecute or Execute returns an error or
// panics; a non-nil result it returns replaces the runtime's FAILED result.
type ErrorHook interface {
	OnError(ctx context.Context, task *Task, err error) *Result
}
