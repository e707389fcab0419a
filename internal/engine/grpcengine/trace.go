package grpcengine

import (
	"context"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// TracedHandler is a Handler that also wants the trace context each result
// carried back (docs/protocol.md, "Trace context"). When the Handler
// implements it, the Server calls TracedResults in place of Results, with
// traces[i] the trace context of results[i] (nil when it carried none).
type TracedHandler interface {
	Handler
	TracedResults(executorID string, results []*gamelanv1.TaskResult, traces []*domain.TraceContext) error
}

// TraceMetadata returns the metadata carrying tc's non-empty values, for a
// push call (append it to the call's outgoing context).
func TraceMetadata(tc *domain.TraceContext) metadata.MD {
	md := metadata.MD{}
	tc.EachHeader(func(name, value string) { md.Set(name, value) })
	return md
}

// CallTrace reads the trace context of an incoming call's metadata.
func CallTrace(ctx context.Context) *domain.TraceContext {
	md, _ := metadata.FromIncomingContext(ctx)
	return domain.TraceFromHeaders(md.Get)
}

// PutTraceInContext sets tc's non-empty values in a StreamTasks or
// ExecuteStream task's context under the reserved keys, the per-task place
// of those streams, creating the context if the task has none.
func PutTraceInContext(task *gamelanv1.ExecutionTask, tc *domain.TraceContext) {
	if tc.IsZero() {
		return
	}
	if task.Context == nil {
		task.Context = &structpb.Struct{}
	}
	if task.Context.Fields == nil {
		task.Context.Fields = map[string]*structpb.Value{}
	}
	tc.EachContextKey(func(key, value string) { task.Context.Fields[key] = structpb.NewStringValue(value) })
}

// OutputTrace reads the trace context a result carries in its output's
// reserved keys (a result of a task that came on a stream); nil when it
// carries none.
func OutputTrace(r *gamelanv1.TaskResult) *domain.TraceContext {
	fields := r.GetOutput().GetFields()
	if fields[domain.TraceParentKey] == nil && fields[domain.TraceStateKey] == nil && fields[domain.BaggageKey] == nil {
		return nil
	}
	return &domain.TraceContext{
		TraceParent: fields[domain.TraceParentKey].GetStringValue(),
		TraceState:  fields[domain.TraceStateKey].GetStringValue(),
		Baggage:     fields[domain.BaggageKey].GetStringValue(),
		InContext:   true,
	}
}

// resultTraces returns the trace context of each result of a batch: the
// output's reserved keys when present, else the call's metadata when the
// batch is one result (a call of several has no per-result metadata).
func resultTraces(call *domain.TraceContext, results []*gamelanv1.TaskResult) []*domain.TraceContext {
	traces := make([]*domain.TraceContext, len(results))
	for i, r := range results {
		traces[i] = OutputTrace(r)
		if !traces[i].FromContext() && len(results) == 1 {
			traces[i] = call
		}
	}
	return traces
}
