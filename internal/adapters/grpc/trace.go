package grpc

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/domain"
)

// The metadata keys of a task's trace context on a push call and of a
// result's on a ReportResults call carrying one result: the W3C header
// names, which gRPC metadata keeps in lower case.
const (
	traceParentHeader = "traceparent"
	traceStateHeader  = "tracestate"
	baggageHeader     = "baggage"
)

// traceFromMetadata reads the trace context of an incoming call. The W3C
// specifications let tracestate and baggage be split over several header
// lines, to be joined with commas; a call with more than one traceparent
// has none that can be trusted, so it is dropped. Values too long are
// dropped too (domain.TraceContext.Bounded): never a reason to refuse a
// task.
func traceFromMetadata(ctx context.Context) domain.TraceContext {
	md, _ := metadata.FromIncomingContext(ctx)
	var tc domain.TraceContext
	if parents := md.Get(traceParentHeader); len(parents) == 1 {
		tc.TraceParent = parents[0]
	}
	tc.TraceState = strings.Join(md.Get(traceStateHeader), ",")
	tc.Baggage = strings.Join(md.Get(baggageHeader), ",")
	return tc.Bounded()
}

// withTraceMetadata returns ctx carrying tc's non-empty values as outgoing
// metadata, for a ReportResults call whose one result came with a push.
func withTraceMetadata(ctx context.Context, tc domain.TraceContext) context.Context {
	tc = tc.Bounded()
	var kv []string
	for _, f := range []struct{ key, value string }{
		{traceParentHeader, tc.TraceParent}, {traceStateHeader, tc.TraceState}, {baggageHeader, tc.Baggage},
	} {
		if f.value != "" {
			kv = append(kv, f.key, f.value)
		}
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// addTraceToOutput puts a result's trace context in its output under the
// reserved keys, for a result whose task brought it in its context
// (StreamTasks, ExecuteStream): those streams' metadata belongs to the whole
// stream, so the per-task place is the task's context going in and the
// result's output coming back. output may be nil; the Struct returned is
// output itself, or a new one.
func addTraceToOutput(output *structpb.Struct, tc domain.TraceContext) *structpb.Struct {
	if !tc.InContext {
		return output
	}
	tc = tc.Bounded()
	if tc.IsZero() {
		return output
	}
	if output == nil {
		output = &structpb.Struct{}
	}
	if output.Fields == nil {
		output.Fields = make(map[string]*structpb.Value, 3)
	}
	for key, value := range map[string]string{
		domain.TraceParentKey: tc.TraceParent, domain.TraceStateKey: tc.TraceState, domain.BaggageKey: tc.Baggage,
	} {
		if value != "" {
			output.Fields[key] = structpb.NewStringValue(value)
		}
	}
	return output
}
