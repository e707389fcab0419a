package domain

import (
	"strings"
	"unicode/utf8"
)

// TraceContext is the W3C trace context (traceparent and tracestate) and
// baggage that travel with one task, and back with its result. The runtime
// keeps the text as received: it is parsed only where tracing is on, and a
// value that does not parse is ignored there, never a reason to refuse a task.
//
// Where a task's trace context travels depends on the transport: the call's
// metadata for a gRPC push, the record's headers on Kafka, the request's
// headers over REST. StreamTasks and ExecuteStream have no per-task
// metadata (theirs belongs to the whole stream), so there the engine puts it
// in the task's context under the reserved keys TraceParentKey,
// TraceStateKey and BaggageKey; TakeTraceContext moves them out before the
// handler sees the context, on every transport. A result carries the trace
// context back the same way its task brought it (see docs/protocol.md).
type TraceContext struct {
	TraceParent string
	TraceState  string
	Baggage     string
	// InContext says the task brought its trace context in its context's
	// reserved keys, not in per-task metadata: its result then carries its
	// own back in its output, under the same keys.
	InContext bool
}

// The reserved context keys of a task's trace context, for transports
// without per-task metadata.
const (
	TraceParentKey = "__traceparent__"
	TraceStateKey  = "__tracestate__"
	BaggageKey     = "__baggage__"
)

// Bounds on a trace context: a traceparent is 55 bytes in version 00 and
// the W3C specifications bound tracestate to 32 members and baggage to
// 8,192 bytes. A longer value is dropped, not truncated: half a header
// would mean something else.
const (
	MaxTraceParentBytes = 256
	MaxTraceStateBytes  = 1024
	MaxBaggageBytes     = 8192
)

// The W3C names of a trace context's fields as headers and metadata keys:
// lower case, as gRPC metadata and the Kafka instrumentations write them
// (HTTP matches header names in any case).
const (
	TraceParentHeader = "traceparent"
	TraceStateHeader  = "tracestate"
	BaggageHeader     = "baggage"
)

// traceHeaders are the header names, for Keys.
var traceHeaders = []string{TraceParentHeader, TraceStateHeader, BaggageHeader}

// Get returns the field of tc named by the header name, "" for any other
// name. With Set and Keys it makes *TraceContext an OpenTelemetry
// propagation.TextMapCarrier, through which tracing reads and writes it.
func (tc *TraceContext) Get(name string) string {
	switch name {
	case TraceParentHeader:
		return tc.TraceParent
	case TraceStateHeader:
		return tc.TraceState
	case BaggageHeader:
		return tc.Baggage
	}
	return ""
}

// Set sets the field of tc named by the header name; other names are
// ignored.
func (tc *TraceContext) Set(name, value string) {
	switch name {
	case TraceParentHeader:
		tc.TraceParent = value
	case TraceStateHeader:
		tc.TraceState = value
	case BaggageHeader:
		tc.Baggage = value
	}
}

// Keys returns the three header names. The slice is shared: do not modify it.
func (tc *TraceContext) Keys() []string { return traceHeaders }

// EachHeader calls set with each non-empty field of tc under its header
// name, in the order traceparent, tracestate, baggage (never when tc is nil).
func (tc *TraceContext) EachHeader(set func(name, value string)) {
	if tc == nil {
		return
	}
	for _, name := range traceHeaders {
		if value := tc.Get(name); value != "" {
			set(name, value)
		}
	}
}

// EachContextKey calls set with each non-empty field of tc under its
// reserved context key (TraceParentKey, TraceStateKey, BaggageKey): how a
// result whose task brought its trace context in its context carries its
// own back in its output, and how an engine puts one in a streamed task.
func (tc *TraceContext) EachContextKey(set func(key, value string)) {
	tc.EachHeader(func(name, value string) {
		switch name {
		case TraceParentHeader:
			set(TraceParentKey, value)
		case TraceStateHeader:
			set(TraceStateKey, value)
		case BaggageHeader:
			set(BaggageKey, value)
		}
	})
}

// TraceFromHeaders reads a trace context from a transport's headers, given
// every value of one header name (values(name)). More than one traceparent
// leaves none that can be trusted, so it is dropped; repeated tracestate and
// baggage lines are joined with commas, as the W3C specifications join
// repeated HTTP headers; values too long are dropped (Bounded). Never a
// reason to refuse a task. It returns nil when the headers carry nothing.
func TraceFromHeaders(values func(name string) []string) *TraceContext {
	var tc TraceContext
	if parents := values(TraceParentHeader); len(parents) == 1 {
		tc.TraceParent = parents[0]
	}
	tc.TraceState = strings.Join(values(TraceStateHeader), ",")
	tc.Baggage = strings.Join(values(BaggageHeader), ",")
	return tc.Bounded()
}

// IsZero reports whether tc carries nothing (true for nil).
func (tc *TraceContext) IsZero() bool {
	return tc == nil || tc.TraceParent == "" && tc.TraceState == "" && tc.Baggage == ""
}

// Bounded returns a copy of tc without the values that are too long or not
// UTF-8 text, which no propagator could read anyway; nil when nothing is
// left (or tc is nil).
func (tc *TraceContext) Bounded() *TraceContext {
	if tc.IsZero() {
		return nil
	}
	keep := func(v string, limit int) string {
		if len(v) > limit || !utf8.ValidString(v) {
			return ""
		}
		return v
	}
	bounded := &TraceContext{
		TraceParent: keep(tc.TraceParent, MaxTraceParentBytes),
		TraceState:  keep(tc.TraceState, MaxTraceStateBytes),
		Baggage:     keep(tc.Baggage, MaxBaggageBytes),
		InContext:   tc.InContext,
	}
	if bounded.IsZero() {
		return nil
	}
	return bounded
}

// FromContext reports whether tc came in the task's context's reserved keys
// (false for nil): its result's then goes back in its output's.
func (tc *TraceContext) FromContext() bool {
	return tc != nil && tc.InContext
}

// TakeTraceContext removes the reserved trace keys from the task's context
// and, when the transport brought no trace context of its own (its per-task
// metadata wins), keeps their string values as the task's Trace, marked
// InContext, so that its result carries its trace context back in the same
// reserved keys. The runtime calls it on every task it is offered.
func (t *Task) TakeTraceContext() {
	if len(t.Context) == 0 {
		return
	}
	var tc TraceContext
	found := takeText(t.Context, TraceParentKey, &tc.TraceParent)
	found = takeText(t.Context, TraceStateKey, &tc.TraceState) || found
	found = takeText(t.Context, BaggageKey, &tc.Baggage) || found
	if found && t.Trace.IsZero() {
		tc.InContext = true
		t.Trace = tc.Bounded()
	}
}

// takeText deletes key from m, and reports whether it was there; a string
// value is kept in into.
func takeText(m map[string]any, key string, into *string) bool {
	v, ok := m[key]
	if !ok {
		return false
	}
	delete(m, key)
	*into, _ = v.(string)
	return true
}
