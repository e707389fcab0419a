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
	if task.Trace != want {
		t.Fatalf("Trace = %+v, want %+v", task.Trace, want)
	}
	if len(task.Context) != 1 || task.Context["amount"] != 10.0 {
		t.Fatalf("the handler's context still holds reserved keys or lost its own: %v", task.Context)
	}
}

func TestTakeTraceContextKeepsTheTransportsOwn(t *testing.T) {
	own := TraceContext{TraceParent: parent}
	task := &Task{Trace: own, Context: map[string]any{TraceParentKey: "00-other", "x": 1}}
	task.TakeTraceContext()
	if task.Trace != own {
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
	if task.Trace != want {
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
	task := &Task{RunID: "r", NodeID: "n", Attempt: 1, Trace: TraceContext{TraceParent: parent, InContext: true}}
	if got := ResultFor(task, StatusCompleted).Trace; got != task.Trace {
		t.Fatalf("result Trace = %+v, want the task's %+v", got, task.Trace)
	}
}
