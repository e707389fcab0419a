package devengine

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// tracerName names the reference engine's tracer.
const tracerName = "github.com/gamelan-go/executor/internal/devengine"

// tracing is the engine's side of a task's trace (Config.TracerProvider):
// a "dispatch <executor type>" producer span per task, whose context goes
// to the executor with the task and which ends when the task's result
// arrives. The zero value (no tracer) is off: it starts nothing and adds
// nothing to a task.
type tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

func newTracing(cfg Config) tracing {
	if cfg.TracerProvider == nil {
		return tracing{}
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return tracing{tracer: cfg.TracerProvider.Tracer(tracerName), propagator: prop}
}

// start starts t's dispatch span unless it has one (a task handed out
// again keeps its span), and returns the trace context to send with t:
// zero when tracing is off.
func (tr tracing) start(t *Task) *domain.TraceContext {
	if tr.tracer == nil {
		return nil
	}
	if t.span == nil {
		name := "dispatch " + t.ExecutorType
		if t.ExecutorType == "" {
			name = "dispatch " + t.NodeType
		}
		_, t.span = tr.tracer.Start(context.Background(), name,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("gamelan.task_id", t.ID),
				attribute.String("gamelan.run_id", t.RunID),
				attribute.String("gamelan.node_id", t.NodeID),
				attribute.Int("gamelan.attempt", t.Attempt),
			))
	}
	tc := &domain.TraceContext{}
	tr.propagator.Inject(trace.ContextWithSpan(context.Background(), t.span), tc)
	return tc
}

// end ends t's span, if it has one. With a result, the executor's span
// (the trace context the result carried back) is recorded as a link and
// as attributes, with the result's status and executor.
func (tr tracing) end(t *Task, res *domain.Result) {
	if t.span == nil {
		return
	}
	span := t.span
	t.span = nil
	if res != nil {
		span.SetAttributes(attribute.String("gamelan.status", string(res.Status)), attribute.String("gamelan.executor_id", res.ExecutorID))
		if sc := tr.spanContext(res.Trace); sc.IsValid() {
			span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("gamelan.link", "executor")}})
			span.SetAttributes(attribute.String("gamelan.executor.trace_id", sc.TraceID().String()),
				attribute.String("gamelan.executor.span_id", sc.SpanID().String()))
		}
		if res.Status == domain.StatusFailed && res.Error != nil {
			span.SetStatus(codes.Error, res.Error.Code)
		}
	}
	span.End()
}

// spanContext reads the span context of a trace context a result carried
// back; invalid when it carries none or one that does not parse.
func (tr tracing) spanContext(tc *domain.TraceContext) trace.SpanContext {
	if tc == nil || tc.TraceParent == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(tr.propagator.Extract(context.Background(), tc))
}

// withoutTraceKeys returns output without the reserved trace keys, which
// carry a result's trace context on a stream and are no part of what the
// handler answered. output is changed in place (it is the engine's copy).
func withoutTraceKeys(output map[string]any) map[string]any {
	delete(output, domain.TraceParentKey)
	delete(output, domain.TraceStateKey)
	delete(output, domain.BaggageKey)
	return output
}
