package app_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
)

// The engine's trace context in the tests below.
const (
	engineTraceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
	engineSpanID    = "00f067aa0ba902b7"
	engineParent    = "00-" + engineTraceID + "-" + engineSpanID + "-01"
	engineTraceBagg = "tenant=acme"
)

// spanCatcher is an executor that keeps the span context of its handler's
// context, from which executor.Logger takes its trace_id and span_id.
type spanCatcher struct {
	mu        sync.Mutex
	sc        trace.SpanContext
	recording bool
}

func (c *spanCatcher) executor(typ string) funcExecutor {
	return funcExecutor{
		desc: domain.Descriptor{Type: typ, MaxConcurrentTasks: 4},
		run: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
			span := trace.SpanFromContext(ctx)
			c.mu.Lock()
			c.sc, c.recording = span.SpanContext(), span.IsRecording()
			c.mu.Unlock()
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
}

func (c *spanCatcher) seen() (trace.SpanContext, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sc, c.recording
}

// tracedConfig returns testConfig with tracing on, every span recorded.
func tracedConfig(t *testing.T) (app.Config, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := testConfig()
	cfg.Tracer = tp.Tracer("test")
	return cfg, rec
}

// spansNamed returns the ended spans named name.
func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var found []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	return found
}

func oneSpan(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	found := spansNamed(rec, name)
	require.Len(t, found, 1, "spans named %q", name)
	return found[0]
}

func attrOf(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestTracingContinuesTheEnginesTrace(t *testing.T) {
	cfg, rec := tracedConfig(t)
	catcher := &spanCatcher{}
	h := newHarness(t, cfg, on("t", catcher.executor("calc")))
	h.run(t)

	tk := task("run1", "calc", 2)
	tk.Trace = &domain.TraceContext{TraceParent: engineParent, Baggage: engineTraceBagg}
	require.NoError(t, h.sources["t"].mustOffer(t, tk).wait(t))

	taskSpan := oneSpan(t, rec, "task calc")
	assert.Equal(t, trace.SpanKindConsumer, taskSpan.SpanKind())
	assert.Equal(t, engineTraceID, taskSpan.SpanContext().TraceID().String(), "the task span is not in the engine's trace")
	assert.Equal(t, engineSpanID, taskSpan.Parent().SpanID().String(), "the task span's parent is not the engine's span")
	assert.True(t, taskSpan.Parent().IsRemote())
	for key, want := range map[string]attribute.Value{
		"gamelan.run_id": attribute.StringValue("run1"), "gamelan.node_id": attribute.StringValue("calc"),
		"gamelan.task_id": attribute.StringValue("task-run1-calc"), "gamelan.attempt": attribute.IntValue(2),
		"gamelan.executor_type": attribute.StringValue("calc"), "gamelan.transport": attribute.StringValue("t"),
		"gamelan.status": attribute.StringValue("COMPLETED"),
	} {
		got, ok := attrOf(taskSpan, key)
		assert.True(t, ok, "task span lacks %s", key)
		assert.Equal(t, want, got, key)
	}
	for _, name := range []string{"queue", "execute", "deliver"} {
		child := oneSpan(t, rec, name)
		assert.Equal(t, taskSpan.SpanContext().SpanID(), child.Parent().SpanID(), "%s is not a child of the task span", name)
		assert.Equal(t, engineTraceID, child.SpanContext().TraceID().String())
	}

	handlerSC, recording := catcher.seen()
	assert.True(t, recording)
	assert.Equal(t, oneSpan(t, rec, "execute").SpanContext().SpanID(), handlerSC.SpanID(), "the handler's context does not carry the execute span")

	// The result carries the task span back, in the engine's trace, with
	// the engine's baggage.
	res := h.sinks["t"].byKey(t, tk.Key())
	back := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": res.Trace.TraceParent})
	backSC := trace.SpanContextFromContext(back)
	require.True(t, backSC.IsValid(), "result traceparent %q", res.Trace.TraceParent)
	assert.Equal(t, engineTraceID, backSC.TraceID().String())
	assert.Equal(t, taskSpan.SpanContext().SpanID(), backSC.SpanID(), "the result does not carry the task span")
	assert.Equal(t, engineTraceBagg, res.Trace.Baggage)
	assert.False(t, res.Trace.InContext)

	// The Deliver call's span links to the task span.
	batch := oneSpan(t, rec, "deliver results")
	require.Len(t, batch.Links(), 1)
	assert.Equal(t, taskSpan.SpanContext().SpanID(), batch.Links()[0].SpanContext.SpanID())
	assert.Equal(t, trace.SpanKindProducer, batch.SpanKind())
}

func TestTracingKeepsInContextOnTheResult(t *testing.T) {
	cfg, _ := tracedConfig(t)
	h := newHarness(t, cfg, on("t", completing("calc", 2)))
	h.run(t)

	tk := task("run1", "calc", 1)
	tk.Context[domain.TraceParentKey] = engineParent
	require.NoError(t, h.sources["t"].mustOffer(t, tk).wait(t))
	res := h.sinks["t"].byKey(t, tk.Key())
	assert.True(t, res.Trace.InContext, "a trace context brought in the task's context must go back the same way")
	assert.Contains(t, res.Trace.TraceParent, engineTraceID)
	assert.NotEqual(t, engineParent, res.Trace.TraceParent, "the result must carry the executor's span, not echo the engine's")
}

func TestTracingBatchSpanLinksEveryTask(t *testing.T) {
	cfg, rec := tracedConfig(t)
	cfg.ResultSenders = 1
	h := newHarness(t, cfg, on("t", completing("calc", 8)))
	gate := make(chan struct{})
	h.sinks["t"].gate = gate
	h.run(t)

	// The first result holds the only sender in Deliver until the others
	// are on their way, so that they go in one batch.
	settled := []*settlement{h.sources["t"].mustOffer(t, task("run1", "n0", 1))}
	require.Eventually(t, func() bool { return h.sinks["t"].deliverCalls() == 1 }, 5*time.Second, time.Millisecond)
	for _, n := range []string{"n1", "n2", "n3"} {
		settled = append(settled, h.sources["t"].mustOffer(t, task("run1", n, 1)))
	}
	require.Eventually(t, func() bool { return len(startedNamed(rec, "deliver")) == 4 }, 5*time.Second, time.Millisecond)
	close(gate)
	for _, st := range settled {
		require.NoError(t, st.wait(t))
	}

	taskSpans := map[trace.SpanID]bool{}
	for _, s := range spansNamed(rec, "task calc") {
		taskSpans[s.SpanContext().SpanID()] = true
	}
	require.Len(t, taskSpans, 4)
	linked, largest := 0, int64(0)
	for _, b := range spansNamed(rec, "deliver results") {
		n, _ := attrOf(b, "gamelan.results")
		assert.Len(t, b.Links(), int(n.AsInt64()), "a batch span links to each of its results' task spans")
		largest = max(largest, n.AsInt64())
		for _, l := range b.Links() {
			assert.True(t, taskSpans[l.SpanContext.SpanID()], "a link to no task span")
			linked++
		}
	}
	assert.Equal(t, 4, linked)
	assert.GreaterOrEqual(t, largest, int64(2), "no batch held several results")
}

// startedNamed returns the spans named name started so far.
func startedNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadWriteSpan {
	var found []sdktrace.ReadWriteSpan
	for _, s := range rec.Started() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	return found
}

func TestTracingEndsSpansOfTasksAnsweredAtIntake(t *testing.T) {
	cfg, rec := tracedConfig(t)
	h := newHarness(t, cfg, on("t", completing("calc", 2)))
	h.run(t)

	noExecutor := task("run1", "x", 1)
	noExecutor.ExecutorType = "nope"
	require.NoError(t, h.sources["t"].mustOffer(t, noExecutor).wait(t))
	assert.Equal(t, domain.CodeNoExecutor, h.sinks["t"].byKey(t, noExecutor.Key()).Error.Code)

	span := oneSpan(t, rec, "task")
	assert.Equal(t, codes.Error, span.Status().Code)
	code, _ := attrOf(span, "gamelan.error_code")
	assert.Equal(t, domain.CodeNoExecutor, code.AsString())
	assert.Len(t, spansNamed(rec, "execute"), 0, "a task answered at intake ran no handler")
	assert.Len(t, spansNamed(rec, "queue"), 1)
	assert.Len(t, spansNamed(rec, "deliver"), 1)

	// A task refused at Offer ends its span too.
	invalid := domain.Task{RunID: "run1", Attempt: 1} // no node id
	_, err := h.sources["t"].offer(t, invalid, false)
	require.ErrorIs(t, err, domain.ErrInvalidTask)
	refused := spansNamed(rec, "task")
	require.Len(t, refused, 2)
	outcome, _ := attrOf(refused[1], "gamelan.outcome")
	assert.Equal(t, "refused", outcome.AsString())
	assert.Equal(t, codes.Error, refused[1].Status().Code)

	// A duplicate of a finished task is answered its stored result, under
	// a span of its own.
	done := task("run2", "calc", 1)
	require.NoError(t, h.sources["t"].mustOffer(t, done).wait(t))
	require.NoError(t, h.sources["t"].mustOffer(t, done).wait(t))
	assert.Len(t, spansNamed(rec, "task calc"), 2)
	assert.Len(t, spansNamed(rec, "execute"), 1, "the duplicate ran again")
}

func TestTracingOffStartsNothingAndEchoesTheTrace(t *testing.T) {
	catcher := &spanCatcher{}
	h := newHarness(t, testConfig(), on("t", catcher.executor("calc")))
	h.run(t)

	tk := task("run1", "calc", 1)
	tk.Trace = &domain.TraceContext{TraceParent: engineParent, TraceState: "k=v", Baggage: engineTraceBagg}
	require.NoError(t, h.sources["t"].mustOffer(t, tk).wait(t))
	assert.Equal(t, tk.Trace, h.sinks["t"].byKey(t, tk.Key()).Trace, "with tracing off the result echoes the task's trace context")

	sc, recording := catcher.seen()
	assert.False(t, recording, "a span records with tracing off")
	assert.Equal(t, engineTraceID, sc.TraceID().String(), "the handler's context lacks the engine's span context")
	assert.Equal(t, engineSpanID, sc.SpanID().String())
	assert.True(t, sc.IsRemote())

	// A task without a trace context: the handler's span is invalid.
	plain := task("run2", "calc", 1)
	require.NoError(t, h.sources["t"].mustOffer(t, plain).wait(t))
	sc, _ = catcher.seen()
	assert.False(t, sc.IsValid())
	assert.True(t, h.sinks["t"].byKey(t, plain.Key()).Trace.IsZero())
}

func TestTracingRecordsAnAbandonedHandler(t *testing.T) {
	cfg, rec := tracedConfig(t)
	release := make(chan struct{})
	stubborn := funcExecutor{
		desc: domain.Descriptor{Type: "stubborn", MaxConcurrentTasks: 1},
		run: func(context.Context, *domain.Task) (*domain.Result, error) {
			<-release // ignores its context
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	h := newHarness(t, cfg, on("t", stubborn))
	h.run(t)
	defer close(release)

	tk := task("run1", "slow", 1)
	tk.Timeout = 20 * time.Millisecond
	require.NoError(t, h.sources["t"].mustOffer(t, tk).wait(t))
	assert.Equal(t, domain.CodeTimeout, h.sinks["t"].byKey(t, tk.Key()).Error.Code)

	execute := oneSpan(t, rec, "execute")
	abandoned, _ := attrOf(execute, "gamelan.abandoned")
	assert.True(t, abandoned.AsBool(), "the execute span does not say the handler was abandoned")
	assert.Equal(t, codes.Error, execute.Status().Code)
	code, _ := attrOf(oneSpan(t, rec, "task stubborn"), "gamelan.error_code")
	assert.Equal(t, domain.CodeTimeout, code.AsString())
}
