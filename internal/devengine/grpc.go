package devengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// GRPC serves the ExecutorService and delivers tasks to gRPC executors:
// over the executor's open ExecuteStream or StreamTasks stream when it has
// one, else by calling its push endpoint (tech.kayys.gamelan.dispatcher
// Executor/Execute), as the Gamelan engine does.
type GRPC struct {
	gamelanv1.UnimplementedExecutorServiceServer

	engine *Engine
	log    *slog.Logger
	// pushCredentials, when set, attach the engine's token to pushes.
	pushCredentials credentials.PerRPCCredentials

	mu       sync.Mutex
	sessions map[string]*session // executor id -> its open stream
	clients  map[string]*ggrpc.ClientConn

	stopping chan struct{} // closed by Stop: open streams end
	stopOnce sync.Once
}

var (
	_ gamelanv1.ExecutorServiceServer = (*GRPC)(nil)
	_ Deliverer                       = (*GRPC)(nil)
	_ Canceller                       = (*GRPC)(nil)
	_ Router                          = (*GRPC)(nil)
)

// NewGRPC returns the engine's gRPC side. pushCredentials may be nil.
func NewGRPC(engine *Engine, pushCredentials credentials.PerRPCCredentials, log *slog.Logger) *GRPC {
	return &GRPC{engine: engine, log: log, pushCredentials: pushCredentials,
		sessions: map[string]*session{}, clients: map[string]*ggrpc.ClientConn{}, stopping: make(chan struct{})}
}

// errStopping ends the streams of a stopping engine; executors reconnect.
var errStopping = status.Error(codes.Unavailable, "the engine is stopping")

// Stop ends every open StreamTasks and ExecuteStream stream (tasks queued
// and not sent go back to the engine's queue) and refuses new ones, so
// that the server's graceful stop need not wait for executors to close
// them, which they never do on their own.
func (g *GRPC) Stop() { g.stopOnce.Do(func() { close(g.stopping) }) }

// session is an executor's open stream: tasks (and, on ExecuteStream,
// cancellations) queued for its sender.
type session struct {
	kind          string // "grpc-stream" or "grpc-bidi"
	tasks         chan domain.Task
	cancellations chan *gamelanv1.TaskCancellation // nil on StreamTasks
	done          chan struct{}
}

// RegisterExecutor implements ExecutorService.
func (g *GRPC) RegisterExecutor(_ context.Context, req *gamelanv1.RegisterExecutorRequest) (*gamelanv1.ExecutorRegistration, error) {
	if req.GetExecutorId() == "" || req.GetExecutorType() == "" {
		return nil, status.Error(codes.InvalidArgument, "executor_id and executor_type are required")
	}
	g.engine.Register(Executor{
		ID: req.GetExecutorId(), Type: req.GetExecutorType(), CommunicationType: communicationName(req.GetCommunicationType()),
		Endpoint: req.GetEndpoint(), SupportedNodeTypes: req.GetSupportedNodeTypes(), MaxConcurrent: int(req.GetMaxConcurrentTasks()),
		Metadata: req.GetMetadata(), Via: "grpc",
	})
	return &gamelanv1.ExecutorRegistration{ExecutorId: req.GetExecutorId(), Status: "REGISTERED", RegisteredAt: timestamppb.Now()}, nil
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

// UnregisterExecutor implements ExecutorService.
func (g *GRPC) UnregisterExecutor(_ context.Context, req *gamelanv1.UnregisterExecutorRequest) (*emptypb.Empty, error) {
	g.engine.Unregister(req.GetExecutorId())
	return &emptypb.Empty{}, nil
}

// Heartbeat implements ExecutorService: NotFound for an executor the
// engine does not know, so that it registers again.
func (g *GRPC) Heartbeat(_ context.Context, req *gamelanv1.HeartbeatRequest) (*emptypb.Empty, error) {
	if err := g.engine.Heartbeat(req.GetExecutorId(), int(req.GetCurrentTaskCount())); err != nil {
		return nil, status.Errorf(codes.NotFound, "executor %s is not registered", req.GetExecutorId())
	}
	return &emptypb.Empty{}, nil
}

// ReportResults implements ExecutorService: the Empty answer acknowledges
// every result of the stream, once recorded.
func (g *GRPC) ReportResults(stream gamelanv1.ExecutorService_ReportResultsServer) error {
	for {
		pr, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&emptypb.Empty{})
		}
		if err != nil {
			return err
		}
		g.engine.Result(resultFromProto(pr))
	}
}

// StreamTasks implements ExecutorService: it keeps the stream open and
// sends the tasks the engine assigns to the executor.
func (g *GRPC) StreamTasks(req *gamelanv1.StreamTasksRequest, stream gamelanv1.ExecutorService_StreamTasksServer) error {
	ex, ok := g.engine.Executor(req.GetExecutorId())
	if !ok {
		return status.Errorf(codes.NotFound, "executor %s is not registered", req.GetExecutorId())
	}
	s := &session{kind: "grpc-stream", tasks: make(chan domain.Task, max(ex.MaxConcurrent, 1)), done: make(chan struct{})}
	g.open(ex.ID, s)
	defer g.close(ex.ID, s)
	for {
		select {
		case t := <-s.tasks:
			if err := stream.Send(taskToProto(t)); err != nil {
				g.engine.GiveBack(t.TaskID, ex.ID)
				return err
			}
		case <-stream.Context().Done():
			return nil
		case <-g.stopping:
			return errStopping
		}
	}
}

// ExecuteStream implements ExecutorService. The executor's first message
// is a heartbeat naming it; then tasks and cancellations go out, and
// heartbeats, acknowledgements and results come in.
func (g *GRPC) ExecuteStream(stream gamelanv1.ExecutorService_ExecuteStreamServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.GetHeartbeat().GetExecutorId()
	ex, ok := g.engine.Executor(id)
	if !ok {
		return status.Errorf(codes.NotFound, "executor %q is not registered (the stream must open with its heartbeat)", id)
	}
	_ = g.engine.Heartbeat(id, int(first.GetHeartbeat().GetCurrentTaskCount()))
	s := &session{kind: "grpc-bidi", tasks: make(chan domain.Task, max(ex.MaxConcurrent, 1)),
		cancellations: make(chan *gamelanv1.TaskCancellation, 16), done: make(chan struct{})}
	g.open(id, s)
	defer g.close(id, s)

	received := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				received <- err
				return
			}
			switch m := msg.GetMessage().(type) {
			case *gamelanv1.ExecutorMessage_Heartbeat:
				_ = g.engine.Heartbeat(id, int(m.Heartbeat.GetCurrentTaskCount()))
			case *gamelanv1.ExecutorMessage_Result:
				g.engine.Result(resultFromProto(m.Result))
			case *gamelanv1.ExecutorMessage_Ack:
			}
		}
	}()
	sendTask := func(t domain.Task) error {
		err := stream.Send(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{Task: taskToProto(t)}})
		if err != nil {
			g.engine.GiveBack(t.TaskID, id)
		}
		return err
	}
	for {
		select {
		case t := <-s.tasks:
			if err := sendTask(t); err != nil {
				return err
			}
		case c := <-s.cancellations:
			// A cancellation must not overtake its task, which may still be
			// queued: the tasks queued before it go first.
			for queued := true; queued; {
				select {
				case t := <-s.tasks:
					if err := sendTask(t); err != nil {
						return err
					}
				default:
					queued = false
				}
			}
			if err := stream.Send(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Cancellation{Cancellation: c}}); err != nil {
				return err
			}
		case err := <-received:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-stream.Context().Done():
			return nil
		case <-g.stopping:
			return errStopping
		}
	}
}

// open makes s the executor's session, replacing an older one.
func (g *GRPC) open(executorID string, s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sessions[executorID] = s
}

// close ends a session and gives back the tasks it had not sent.
func (g *GRPC) close(executorID string, s *session) {
	g.mu.Lock()
	if g.sessions[executorID] == s {
		delete(g.sessions, executorID)
	}
	close(s.done)
	g.mu.Unlock()
	for {
		select {
		case t := <-s.tasks:
			g.engine.GiveBack(t.TaskID, executorID)
		default:
			return
		}
	}
}

// Deliver implements Deliverer.
func (g *GRPC) Deliver(ctx context.Context, to Executor, task domain.Task) (string, error) {
	g.mu.Lock()
	s := g.sessions[to.ID]
	g.mu.Unlock()
	if s != nil {
		select {
		case s.tasks <- task:
			return s.kind, nil
		case <-s.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "grpc-push", g.push(ctx, to, task)
}

// Route implements Router: the executor's open stream, else push.
func (g *GRPC) Route(to Executor) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := g.sessions[to.ID]; s != nil {
		return s.kind
	}
	return "grpc-push"
}

// push calls the executor's Execute endpoint.
func (g *GRPC) push(ctx context.Context, to Executor, task domain.Task) error {
	conn, err := g.client(to.Endpoint)
	if err != nil {
		return err
	}
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := dispatcherpb.NewExecutorClient(conn).Execute(callCtx, pushRequest(task, to.ID))
	if err != nil {
		return fmt.Errorf("push to %s: %w", to.Endpoint, err)
	}
	if !ack.GetAccepted() {
		return fmt.Errorf("push to %s refused: %d %s", to.Endpoint, ack.GetCode(), ack.GetMessage())
	}
	return nil
}

func (g *GRPC) client(endpoint string) (*ggrpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if conn, ok := g.clients[endpoint]; ok {
		return conn, nil
	}
	opts := []ggrpc.DialOption{ggrpc.WithTransportCredentials(insecure.NewCredentials())}
	if g.pushCredentials != nil {
		opts = append(opts, ggrpc.WithPerRPCCredentials(g.pushCredentials))
	}
	conn, err := ggrpc.NewClient(endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", endpoint, err)
	}
	g.clients[endpoint] = conn
	return conn, nil
}

// Cancel implements Canceller: only an ExecuteStream can carry a
// cancellation.
func (g *GRPC) Cancel(executorID, taskID, reason string) bool {
	g.mu.Lock()
	s := g.sessions[executorID]
	g.mu.Unlock()
	if s == nil || s.cancellations == nil {
		return false
	}
	select {
	case s.cancellations <- &gamelanv1.TaskCancellation{TaskId: taskID, Reason: reason}:
		return true
	case <-s.done:
		return false
	}
}

// Close closes the push connections.
func (g *GRPC) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for endpoint, conn := range g.clients {
		_ = conn.Close()
		delete(g.clients, endpoint)
	}
}
