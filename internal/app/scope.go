package app

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// handlerScope is the context a handler runs under: its parent's, plus the
// task's scope, which HandlerLogger reads. It answers scopeKey itself and
// leaves every other key, and Done, Err and Deadline, to its parent, so a
// handler's context behaves as its parent does (a child made of it still
// joins the parent's cancellation without a goroutine).
//
// A worker's handlerScope lives in the job (job.scope): the task costs no
// allocation more for it. The logger is built only when a handler asks for
// it, as most never do.
type handlerScope struct {
	context.Context
	task         *domain.Task
	taskID       string
	executorType string
	// log is the runtime's logger (nil: slog.Default()).
	log *slog.Logger
}

// scopeKey is the context key a handlerScope answers with itself.
type scopeKey struct{}

// Value implements context.Context.
func (s *handlerScope) Value(key any) any {
	if _, ok := key.(scopeKey); ok {
		return s
	}
	return s.Context.Value(key)
}

// HandlerLogger returns the logger for the task whose handler's context is
// ctx: the runtime's logger with run_id, node_id, task_id, attempt and
// executor_type, and trace_id and span_id when ctx carries a valid span
// context (the execute span when tracing is on, else the engine's, if it
// sent one). Outside a handler's context it returns slog.Default(). Package
// executor exports it as Logger.
func HandlerLogger(ctx context.Context) *slog.Logger {
	s, _ := ctx.Value(scopeKey{}).(*handlerScope)
	if s == nil {
		return slog.Default()
	}
	log := s.log
	if log == nil {
		log = slog.Default()
	}
	attrs := make([]any, 0, 7)
	attrs = append(attrs, slog.String("run_id", s.task.RunID), slog.String("node_id", s.task.NodeID),
		slog.String("task_id", s.taskID), slog.Int("attempt", s.task.Attempt), slog.String("executor_type", s.executorType))
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return log.With(attrs...)
}
