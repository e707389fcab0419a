package grpc

import (
	"context"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/domain"
)

// traceFromMetadata reads the trace context of an incoming push call, from
// its metadata's W3C keys (see domain.TraceFromHeaders).
func traceFromMetadata(ctx context.Context) *domain.TraceContext {
	md, _ := metadata.FromIncomingContext(ctx)
	return domain.TraceFromHeaders(md.Get)
}

// withTraceMetadata returns ctx carrying tc's non-empty values as outgoing
// metadata, for a ReportResults call whose one result came with a push.
func withTraceMetadata(ctx context.Context, tc *domain.TraceContext) context.Context {
	var kv []string
	tc.Bounded().EachHeader(func(name, value string) { kv = append(kv, name, value) })
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
func addTraceToOutput(output *structpb.Struct, tc *domain.TraceContext) *structpb.Struct {
	if !tc.FromContext() {
		return output
	}
	if tc = tc.Bounded(); tc == nil {
		return output
	}
	if output == nil {
		output = &structpb.Struct{}
	}
	if output.Fields == nil {
		output.Fields = make(map[string]*structpb.Value, 3)
	}
	tc.EachContextKey(func(key, value string) { output.Fields[key] = structpb.NewStringValue(value) })
	return output
}
