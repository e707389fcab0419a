package devengine

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// GRPC is the engine's gRPC side, on the protocol's engine side
// (grpcengine.Server): it is the Server's Handler, taking what executors say
// to the Engine, and it delivers tasks to gRPC executors, queued on their
// open ExecuteStream or StreamTasks streams when they have some, else
// pushed to their Execute endpoint, as the Gamelan engine does.
type GRPC struct {
	engine *Engine
	server *grpcengine.Server
	log    *slog.Logger
}

var (
	_ grpcengine.TracedHandler = (*GRPC)(nil)
	_ Deliverer                = (*GRPC)(nil)
	_ Streamer                 = (*GRPC)(nil)
	_ Canceller                = (*GRPC)(nil)
	_ Router                   = (*GRPC)(nil)
)

// NewGRPC returns the engine's gRPC side; cfg configures its Server (token
// verification, push credentials).
func NewGRPC(engine *Engine, cfg grpcengine.Config, log *slog.Logger) *GRPC {
	g := &GRPC{engine: engine, log: log}
	g.server = grpcengine.New(g, cfg)
	return g
}

// Server is the ExecutorService the executors call.
func (g *GRPC) Server() *grpcengine.Server { return g.server }

// The transports of gRPC deliveries, as tasks and the summary name them.
const (
	transportPush   = "grpc-push"
	transportStream = "grpc-stream"
	transportBidi   = "grpc-bidi"
)

// Register implements grpcengine.Handler.
func (g *GRPC) Register(req *gamelanv1.RegisterExecutorRequest) error {
	if req.GetExecutorType() == "" {
		return status.Error(codes.InvalidArgument, "executor_id and executor_type are required")
	}
	g.engine.Register(Executor{
		ID: req.GetExecutorId(), Type: req.GetExecutorType(), CommunicationType: communicationName(req.GetCommunicationType()),
		Endpoint: req.GetEndpoint(), SupportedNodeTypes: req.GetSupportedNodeTypes(), MaxConcurrent: int(req.GetMaxConcurrentTasks()),
		Metadata: req.GetMetadata(), Via: "grpc",
	})
	return nil
}

func communicationName(c gamelanv1.CommunicationType) string {
	switch c {
	case gamelanv1.CommunicationType_COMMUNICATION_TYPE_KAFKA:
		return "KAFKA"
	case gamelanv1.CommunicationType_COMMUNICATION_TYPE_REST:
		return "REST"
	}
	return "GRPC"
}

// Unregister implements grpcengine.Handler.
func (g *GRPC) Unregister(executorID string) { g.engine.Unregister(executorID) }

// Heartbeat implements grpcengine.Handler: NotFound for an executor the
// engine does not know, so that it registers again.
func (g *GRPC) Heartbeat(hb *gamelanv1.HeartbeatRequest) error {
	if err := g.engine.Heartbeat(heartbeatFromProto(hb)); err != nil {
		return grpcengine.NotRegistered(hb.GetExecutorId())
	}
	return nil
}

// Results implements grpcengine.Handler: each result is recorded (or
// refused, or counted as a duplicate) by the Engine.
func (g *GRPC) Results(executorID string, results []*gamelanv1.TaskResult) error {
	return g.TracedResults(executorID, results, nil)
}

// TracedResults implements grpcengine.TracedHandler: Results, with the
// trace context each result carried back (traces[i] for results[i]), which
// ends its task's dispatch span. The reserved keys that carried it in an
// output are not kept in the recorded output.
func (g *GRPC) TracedResults(_ string, results []*gamelanv1.TaskResult, traces []*domain.TraceContext) error {
	for i, r := range results {
		res := resultFromProto(r)
		if i < len(traces) {
			res.Trace = traces[i]
			if res.Trace.FromContext() {
				res.Output = withoutTraceKeys(res.Output)
			}
		}
		g.engine.Result(res)
	}
	return nil
}

// Acknowledged implements grpcengine.Handler: the engine tracks results,
// not acknowledgements.
func (g *GRPC) Acknowledged(string, *gamelanv1.TaskAcknowledgement) {}

// StreamRequested implements grpcengine.Handler: only a registered
// executor may open a StreamTasks stream (NotFound makes it register).
func (g *GRPC) StreamRequested(req *gamelanv1.StreamTasksRequest) error {
	if _, ok := g.engine.Executor(req.GetExecutorId()); !ok {
		return grpcengine.NotRegistered(req.GetExecutorId())
	}
	return nil
}

// MaxConcurrentTasks implements grpcengine.Handler.
func (g *GRPC) MaxConcurrentTasks(executorID string) int32 {
	ex, _ := g.engine.Executor(executorID)
	return int32(ex.MaxConcurrent)
}

// StreamClosed implements grpcengine.Handler: the tasks the stream sent go
// back to the queue once their results are overdue (Engine.StreamClosed);
// once the executor has no stream left, those it never sent go back at
// once.
func (g *GRPC) StreamClosed(executorID string, unanswered []*gamelanv1.ExecutionTask) {
	ids := make([]string, 0, len(unanswered))
	for _, t := range unanswered {
		ids = append(ids, t.GetTaskId())
	}
	g.engine.StreamClosed(executorID, ids)
	if g.server.OpenStreams(executorID) > 0 {
		return
	}
	for _, t := range g.server.Unqueue(executorID) {
		g.engine.GiveBack(t.GetTaskId(), executorID)
	}
}

// Offer implements Streamer: the task is queued on the executor's open
// streams, if it has some.
func (g *GRPC) Offer(to Executor, task domain.Task) (string, bool) {
	if g.server.StreamKind(to.ID) == grpcengine.NoStream {
		return "", false
	}
	pt, err := taskToProto(task)
	if err != nil {
		g.log.Warn("task not sent on a stream; pushing it", slog.String("task_id", task.TaskID), slog.Any("error", err))
		return "", false
	}
	// A stream's metadata is the whole stream's: the task's trace context
	// goes in its context's reserved keys.
	grpcengine.PutTraceInContext(pt, task.Trace)
	switch kind, ok := g.server.Offer(to.ID, pt); {
	case !ok:
		return "", false
	case kind == grpcengine.ExecuteStreamKind:
		return transportBidi, true
	}
	return transportStream, true
}

// Room implements Streamer.
func (g *GRPC) Room(executorID string) (int, bool) { return g.server.Room(executorID) }

// Route implements Router: a task not offered to a stream is pushed.
func (g *GRPC) Route(Executor) string { return transportPush }

// Deliver implements Deliverer: it calls the executor's Execute endpoint,
// as the Gamelan engine does, with the variables as plain strings and the
// signature naming the executor.
func (g *GRPC) Deliver(ctx context.Context, to Executor, task domain.Task) (string, error) {
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if md := grpcengine.TraceMetadata(task.Trace); len(md) > 0 {
		callCtx = metadata.NewOutgoingContext(callCtx, md) // a push is one task: its metadata is the task's
	}
	ack, err := g.server.Push(callCtx, to.Endpoint, pushRequest(task, to.ID))
	if err != nil {
		return "", err
	}
	if !ack.GetAccepted() {
		return "", fmt.Errorf("push to %s refused: %d %s", to.Endpoint, ack.GetCode(), ack.GetMessage())
	}
	return transportPush, nil
}

// Cancel implements Canceller: only an ExecuteStream can carry a
// cancellation, after its task.
func (g *GRPC) Cancel(_, taskID, reason string) bool { return g.server.Cancel(taskID, reason) }
