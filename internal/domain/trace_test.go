package domain

import (
	"strings"
	"testing"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestTakeTraceContextMovesReservedKeysOut(t *testing.T) {
	task := &Task{Context: map[string]any{
		"amount": 10.0, TraceParentKey: parent, TraceStateKey: "vendor=1", BaggageKey: "tenant=acme",
	}}
	task.TakeTraceContext()
	want := TraceContext{TraceParent: parent, TraceState: "vendor=1", Baggage: "tenant=acme", InContext: true}
	if task.Trace == nil || *task.Trace != want {
		t.Fatalf("Trace = %+v, want %+v", task.Trace, want)
	}
	if len(task.Context) != 1 || task.Context["amount"] != 10.0 {
		t.Fatalf("the handler's context still holds reserved keys or lost its own: %v", task.Context)
	}
}

func TestTakeTraceContextKeepsTheTransportsOwn(t *testing.T) {
	own := TraceContext{TraceParent: parent}
	task := &Task{Trace: &own, Context: map[string]any{TraceParentKey: "00-other", "x": 1}}
	task.TakeTraceContext()
	if *task.Trace != own {
		t.Fatalf("Trace = %+v: per-task metadata must win over the context's keys", task.Trace)
	}
	if _, left := task.Context[TraceParentKey]; left {
		t.Fatal("the reserved key reached the handler")
	}
}

func TestTakeTraceContextDropsWhatNoPropagatorReads(t *testing.T) {
	task := &Task{Context: map[string]any{
		TraceParentKey: 42.0, // not text
		TraceStateKey:  strings.Repeat("a", MaxTraceStateBytes+1),
		BaggageKey:     "ok=1",
	}}
	task.TakeTraceContext()
	want := TraceContext{Baggage: "ok=1", InContext: true}
	if task.Trace == nil || *task.Trace != want {
		t.Fatalf("Trace = %+v, want %+v", task.Trace, want)
	}
	if len(task.Context) != 0 {
		t.Fatalf("reserved keys left in the context: %v", task.Context)
	}
}

func TestTakeTraceContextWithoutKeys(t *testing.T) {
	task := &Task{Context: map[string]any{"x": 1}}
	task.TakeTraceContext()
	if !task.Trace.IsZero() {
		t.Fatalf("Trace = %+v from a context without reserved keys", task.Trace)
	}
}

func TestResultForCarriesTheTasksTraceBack(t *testing.T) {
	task := &Task{RunID: "r", NodeID: "n", Attempt: 1, Trace: &TraceContext{TraceParent: parent, InContext: true}}
	if got := ResultFor(task, StatusCompleted).Trace; got != task.Trace {
		t.Fatalf("result Trace = %+v, want the task's %+v", got, task.Trace)
	}
}

func TestTraceFromHeaders(t *testing.T) {
	headers := map[string][]string{
		TraceParentHeader: {parent},
		TraceStateHeader:  {"a=1", "b=2"},
		BaggageHeader:     {"tenant=acme"},
	}
	got := TraceFromHeaders(func(name string) []string { return headers[name] })
	want := TraceContext{TraceParent: parent, TraceState: "a=1,b=2", Baggage: "tenant=acme"}
	if got == nil || *got != want {
		t.Fatalf("TraceFromHeaders = %+v, want %+v: repeated lists are joined with commas", got, want)
	}

	headers[TraceParentHeader] = []string{parent, parent}
	headers[BaggageHeader] = []string{strings.Repeat("b", MaxBaggageBytes+1)}
	got = TraceFromHeaders(func(name string) []string { return headers[name] })
	if got == nil || got.TraceParent != "" || got.Baggage != "" || got.TraceState != "a=1,b=2" {
		t.Fatalf("TraceFromHeaders = %+v: two traceparents and an oversized baggage must be dropped, the rest kept", got)
	}
}

// TestTraceContextIsACarrier: Get, Set and Keys are what an OpenTelemetry
// propagator uses, and EachHeader what transports write.
func TestTraceContextIsACarrier(t *testing.T) {
	var tc TraceContext
	for _, name := range tc.Keys() {
		tc.Set(name, "v-"+name)
	}
	tc.Set("other", "ignored")
	if tc != (TraceContext{TraceParent: "v-traceparent", TraceState: "v-tracestate", Baggage: "v-baggage"}) {
		t.Fatalf("Set wrote %+v", tc)
	}
	if tc.Get(TraceStateHeader) != "v-tracestate" || tc.Get("other") != "" {
		t.Fatal("Get does not read what Set wrote, or answers an unknown name")
	}
	var written []string
	(&TraceContext{TraceParent: parent, Baggage: "k=v"}).EachHeader(func(name, value string) { written = append(written, name+"="+value) })
	if strings.Join(written, " ") != "traceparent="+parent+" baggage=k=v" {
		t.Fatalf("EachHeader wrote %q: only the non-empty fields, in order", written)
	}
}
