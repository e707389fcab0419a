package domain

import (
	"context"
	"log/slog"
)

// TaskScope is what a handler's context knows about the task it runs: the
// runtime makes every handler's context answer TaskScopeKey with it, and
// the public API builds the handler's logger from it (executor.Logger).
type TaskScope struct {
	Task *Task
	// TaskID is the task's id, its key when the engine sent none.
	TaskID string
	// ExecutorType is the type whose handler runs the task.
	ExecutorType string
	// Log is the service's logger; nil means slog.Default().
	Log *slog.Logger
}

// TaskScopeKey is the context key a handler's context answers with its
// *TaskScope.
type TaskScopeKey struct{}

// ScopeOf returns the scope of the task whose handler's context is ctx, or
// nil outside a handler's context.
func ScopeOf(ctx context.Context) *TaskScope {
	s, _ := ctx.Value(TaskScopeKey{}).(*TaskScope)
	return s
}
