package executor

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// Logger returns the logger for the task whose handler's context is ctx:
// the service's logger (JSON lines, at the service's level), with the
// fields that tie a line to its task: run_id, node_id, task_id, attempt and
// executor_type, and trace_id and span_id when the task is traced (tracing
// on, or a traceparent sent by the engine). Pass the ctx Execute received,
// or one derived from it:
//
//	func (OrderValidator) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
//		log := executor.Logger(ctx)
//		log.Info("validating order", slog.Int("lines", len(lines)))
//		...
//	}
//
// The logger is built when Logger is called: call it once per task, not
// once per line. Outside a handler's context it returns slog.Default().
func Logger(ctx context.Context) *slog.Logger {
	s := domain.ScopeOf(ctx)
	if s == nil {
		return slog.Default()
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	attrs := make([]any, 0, 7)
	attrs = append(attrs, slog.String("run_id", s.Task.RunID), slog.String("node_id", s.Task.NodeID),
		slog.String("task_id", s.TaskID), slog.Int("attempt", s.Task.Attempt), slog.String("executor_type", s.ExecutorType))
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return log.With(attrs...)
}

// Span returns the span of the task whose handler's context is ctx: the
// "execute" span, a child of the task's span, when tracing is on. A
// handler records on it, or starts spans of its own from ctx (any
// OpenTelemetry instrumentation does), and they join the engine's trace:
//
//	executor.Span(ctx).SetAttributes(attribute.Int("order.lines", len(lines)))
//
// With tracing off the span records nothing; its SpanContext is the
// engine's when the engine sent a traceparent, else invalid. Span never
// returns nil.
func Span(ctx context.Context) trace.Span {
	return trace.SpanFromContext(ctx)
}
