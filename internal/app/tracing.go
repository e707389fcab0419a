package app

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// Tracing. When Config.Tracer is set, every task offered gets a span of its
// own (kind consumer, "task <executor type>"), parented on the trace
// context the engine sent with it, from Offer until its result is
// acknowledged, with three children:
//
//	task ─┬─ queue    admitted until a worker takes it
//	      ├─ execute  the handler (its context carries this span)
//	      └─ deliver  handed to the outbox until acknowledged
//
// Each Deliver call gets a span too, linked to the task spans of the
// results it carries. The result carries the task span's context back to
// the engine (Result.Trace).
//
// With no tracer, job.spans stays nil and every step below is skipped: the
// hot path pays one nil check per step, and nothing is parsed, except a
// traceparent the engine sent, which the handler's context still carries
// (see handlerScope) so that the handler's log lines name the trace.

// Attribute keys of the spans, namespaced as OpenTelemetry recommends for
// attributes of one's own.
const (
	attrRunID           = attribute.Key("gamelan.run_id")
	attrNodeID          = attribute.Key("gamelan.node_id")
	attrTaskID          = attribute.Key("gamelan.task_id")
	attrAttempt         = attribute.Key("gamelan.attempt")
	attrExecutorType    = attribute.Key("gamelan.executor_type")
	attrTransport       = attribute.Key("gamelan.transport")
	attrStatus          = attribute.Key("gamelan.status")
	attrErrorCode       = attribute.Key("gamelan.error_code")
	attrAbandoned       = attribute.Key("gamelan.abandoned")
	attrOutcome         = attribute.Key("gamelan.outcome")
	attrResults         = attribute.Key("gamelan.results")
	attrDeliveryAttempt = attribute.Key("gamelan.delivery_attempt")
)

// *domain.TraceContext is the propagation.TextMapCarrier a task's and a
// result's trace contexts are extracted from and injected into.
var _ propagation.TextMapCarrier = (*domain.TraceContext)(nil)

// remoteContext returns ctx with the engine's span context from tc, when tc
// has a traceparent (else ctx itself). With tracing off it is how a
// handler's context still names the engine's trace.
func remoteContext(ctx context.Context, tc *domain.TraceContext) context.Context {
	if tc == nil || tc.TraceParent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, tc)
}

// jobSpans are the spans of one task (see Tracing above). A job's spans are
// written by whoever holds the job at each stage (intake, worker, sender),
// each handing the job on under a lock, so they need no lock of their own.
type jobSpans struct {
	// ctx carries the task span, and the engine's baggage.
	ctx     context.Context
	tracer  trace.Tracer
	task    trace.Span
	queue   trace.Span
	execute trace.Span
	deliver trace.Span
}

// startTaskSpan starts the span of a task just offered, parented on the
// trace context the engine sent with it. It returns nil when tracing is off.
func (r *Runtime) startTaskSpan(task *domain.Task, tr *transport) *jobSpans {
	if r.cfg.Tracer == nil {
		return nil
	}
	parent := context.Background()
	if !task.Trace.IsZero() {
		parent = r.cfg.Propagator.Extract(parent, task.Trace)
	}
	ctx, span := r.cfg.Tracer.Start(parent, "task", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attrRunID.String(task.RunID), attrNodeID.String(task.NodeID), attrTaskID.String(task.ID()),
		attrAttempt.Int(task.Attempt), attrTransport.String(tr.Name)))
	return &jobSpans{ctx: ctx, tracer: r.cfg.Tracer, task: span}
}

// admitted names the task span after the executor type the task was routed
// to (none: answered at intake) and starts its queue span.
func (s *jobSpans) admitted(e *hostedExecutor) {
	if e != nil {
		s.task.SetName("task " + e.desc.Type)
		s.task.SetAttributes(attrExecutorType.String(e.desc.Type))
	}
	_, s.queue = s.tracer.Start(s.ctx, "queue")
}

// refused ends the spans of a task the runtime did not admit.
func (s *jobSpans) refused(err error) {
	if s.queue != nil {
		s.queue.End()
	}
	s.task.SetAttributes(attrOutcome.String("refused"))
	s.task.SetStatus(codes.Error, err.Error())
	s.task.End()
}

// joined ends the spans of a duplicate that joined the same task in flight:
// the original's spans carry on.
func (s *jobSpans) joined() {
	s.queue.End()
	s.task.SetAttributes(attrOutcome.String("duplicate joined the task in flight"))
	s.task.End()
}

// startExecute starts the execute span, a child of the task span, and
// returns ctx (the handler's) carrying it and the engine's baggage.
func (s *jobSpans) startExecute(ctx context.Context) context.Context {
	_, s.execute = s.tracer.Start(s.ctx, "execute")
	if b := baggage.FromContext(s.ctx); b.Len() > 0 {
		ctx = baggage.ContextWithBaggage(ctx, b)
	}
	return trace.ContextWithSpan(ctx, s.execute)
}

// executed ends the execute span with the handler's result.
func (s *jobSpans) executed(res *domain.Result) {
	recordResult(s.execute, res)
	s.execute.End()
}

// sending records the result on the task span, starts the deliver span, and
// returns res with the task span's trace context (a child of the engine's),
// sent back the same way the task's came. res is taken and returned by
// value: a pointer to the caller's would move it to the heap for every task,
// traced or not.
func (s *jobSpans) sending(res domain.Result, task *domain.Task, prop propagation.TextMapPropagator) domain.Result {
	recordResult(s.task, &res)
	_, s.deliver = s.tracer.Start(s.ctx, "deliver")
	tc := &domain.TraceContext{InContext: task.Trace.FromContext()}
	prop.Inject(s.ctx, tc)
	res.Trace = tc.Bounded()
	return res
}

// settled ends the task's spans once its delivery ended: acknowledged (err
// nil), dead-lettered, given up or handed back.
func (s *jobSpans) settled(err error) {
	for _, sp := range []trace.Span{s.queue, s.execute, s.deliver} {
		if sp == nil {
			continue
		}
		if err != nil && sp == s.deliver {
			sp.SetStatus(codes.Error, err.Error())
		}
		sp.End() // ending a span twice is harmless: the second End is ignored
	}
	if err != nil {
		s.task.SetAttributes(attrOutcome.String("not delivered"))
		s.task.SetStatus(codes.Error, err.Error())
	}
	s.task.End()
}

// recordResult puts a result's status and error code on span; a result
// other than COMPLETED or SKIPPED is an error.
func recordResult(span trace.Span, res *domain.Result) {
	span.SetAttributes(attrStatus.String(string(res.Status)))
	if res.Error != nil {
		span.SetAttributes(attrErrorCode.String(res.Error.Code))
	}
	if res.Status != domain.StatusCompleted && res.Status != domain.StatusSkipped {
		msg := string(res.Status)
		if res.Error != nil {
			msg = res.Error.Code + ": " + res.Error.Message
		}
		span.SetStatus(codes.Error, msg)
	}
}

// startBatchSpan starts the span of one Deliver call, linked to the task
// span of each result in batch. It returns nil when tracing is off.
func (o *outbox) startBatchSpan(batch []outboxItem, attempt int) trace.Span {
	if o.tracer == nil {
		return nil
	}
	links := make([]trace.Link, 0, len(batch))
	for _, it := range batch {
		if s := it.job.spans; s != nil {
			links = append(links, trace.Link{SpanContext: s.task.SpanContext()})
		}
	}
	_, span := o.tracer.Start(context.Background(), "deliver results", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...), trace.WithAttributes(attrTransport.String(o.transport), attrResults.Int(len(batch)),
			attrDeliveryAttempt.Int(attempt+1)))
	return span
}

// endBatchSpan ends a Deliver call's span with the call's error.
func endBatchSpan(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
