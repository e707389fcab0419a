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
	sessions map[uint64]*session // open streams, by the engine's session number
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
		sessions: map[uint64]*session{}, clients: map[string]*ggrpc.ClientConn{}, stopping: make(chan struct{})}
}

// errStopping ends the streams of a stopping engine; executors reconnect.
var errStopping = status.Error(codes.Unavailable, "the engine is stopping")

// Stop ends every open StreamTasks and ExecuteStream stream (tasks queued
// and not sent go back to the engine's queue) and refuses new ones, so
// that the server's graceful stop need not wait for executors to close
// them, which they never do on their own.
func (g *GRPC) Stop() { g.stopOnce.Do(func() { close(g.stopping) }) }

// The transports of gRPC deliveries, as tasks and the summary name them.
const (
	transportPush   = "grpc-push"
	transportStream = "grpc-stream"
	transportBidi   = "grpc-bidi"
)

// session is an executor's open stream: the messages queued for its
// sender, in order, so that a cancellation never overtakes its task.
// Once closed, nothing more is queued.
type session struct {
	n          uint64 // the engine's number for it
	executorID string
	kind       string // transportStream or transportBidi
	ready      chan struct{}

	mu     sync.Mutex
	closed bool
	outbox []*gamelanv1.EngineMessage
}

// queue adds a message for the sender; false once the session is closed.
func (s *session) queue(m *gamelanv1.EngineMessage) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.outbox = append(s.outbox, m)
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return true
}

// next takes the first queued message, nil when there is none.
func (s *session) next() *gamelanv1.EngineMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.outbox) == 0 {
		return nil
	}
	m := s.outbox[0]
	s.outbox[0] = nil
	s.outbox = s.outbox[1:]
	return m
}

// end closes the session and returns the tasks it never sent.
func (s *session) end() (unsent []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, m := range s.outbox {
		if t := m.GetTask(); t != nil {
			unsent = append(unsent, t.GetTaskId())
		}
	}
	s.outbox = nil
	return unsent
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
	if err := g.engine.Heartbeat(heartbeatFromProto(req)); err != nil {
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
// sends the tasks the engine assigns to the executor, at most
// max_concurrent of them unanswered when the request sets it.
func (g *GRPC) StreamTasks(req *gamelanv1.StreamTasksRequest, stream gamelanv1.ExecutorService_StreamTasksServer) error {
	ex, ok := g.engine.Executor(req.GetExecutorId())
	if !ok {
		return status.Errorf(codes.NotFound, "executor %s is not registered", req.GetExecutorId())
	}
	s := g.open(ex.ID, transportStream, int(req.GetMaxConcurrent()))
	defer g.close(s)
	send := func(m *gamelanv1.EngineMessage) error { return stream.Send(m.GetTask()) }
	return g.serve(stream.Context(), s, send, nil)
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
	if _, ok := g.engine.Executor(id); !ok {
		return status.Errorf(codes.NotFound, "executor %q is not registered (the stream must open with its heartbeat)", id)
	}
	_ = g.engine.Heartbeat(heartbeatFromProto(first.GetHeartbeat()))
	s := g.open(id, transportBidi, 0)
	defer g.close(s)

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
				_ = g.engine.Heartbeat(heartbeatFromProto(m.Heartbeat))
			case *gamelanv1.ExecutorMessage_Result:
				g.engine.Result(resultFromProto(m.Result))
			case *gamelanv1.ExecutorMessage_Ack:
			}
		}
	}()
	return g.serve(stream.Context(), s, stream.Send, received)
}

// serve sends what is queued on s until the stream ends, the executor's
// side of it ends (received, nil on StreamTasks) or the engine stops. A
// task whose send failed goes back to the queue.
func (g *GRPC) serve(ctx context.Context, s *session, send func(*gamelanv1.EngineMessage) error, received <-chan error) error {
	for {
		for m := s.next(); m != nil; m = s.next() {
			if err := send(m); err != nil {
				if t := m.GetTask(); t != nil {
					g.engine.GiveBack(t.GetTaskId(), s.executorID)
				}
				return err
			}
		}
		select {
		case <-s.ready:
		case err := <-received:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return nil
		case <-g.stopping:
			return errStopping
		}
	}
}

// open starts a session of the executor with the engine.
func (g *GRPC) open(executorID, kind string, limit int) *session {
	s := &session{executorID: executorID, kind: kind, ready: make(chan struct{}, 1)}
	g.mu.Lock()
	defer g.mu.Unlock()
	s.n = g.engine.OpenSession(executorID, limit)
	g.sessions[s.n] = s
	return s
}

// close ends a session: the tasks it never sent go back to the queue at
// once, those it sent once their results are overdue (Engine.CloseSession).
func (g *GRPC) close(s *session) {
	unsent := s.end()
	g.mu.Lock()
	delete(g.sessions, s.n)
	g.mu.Unlock()
	for _, taskID := range unsent {
		g.engine.GiveBack(taskID, s.executorID)
	}
	g.engine.CloseSession(s.executorID, s.n)
}

// Deliver implements Deliverer: over the stream session the engine chose
// (to names it), else by push.
func (g *GRPC) Deliver(ctx context.Context, to Executor, task domain.Task) (string, error) {
	if to.session == 0 {
		return transportPush, g.push(ctx, to, task)
	}
	pt, err := taskToProto(task)
	if err != nil {
		return "", err
	}
	s := g.session(to.session)
	if s == nil || !s.queue(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{Task: pt}}) {
		return "", fmt.Errorf("the stream of %s closed before task %s was queued on it", to.ID, task.TaskID)
	}
	return s.kind, nil
}

func (g *GRPC) session(n uint64) *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions[n]
}

// Route implements Router: the stream session to names, else push.
func (g *GRPC) Route(to Executor) string {
	if s := g.session(to.session); s != nil {
		return s.kind
	}
	return transportPush
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

// Cancel implements Canceller: only an open ExecuteStream can carry a
// cancellation.
func (g *GRPC) Cancel(session uint64, taskID, reason string) bool {
	s := g.session(session)
	return s != nil && s.kind == transportBidi && s.queue(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Cancellation{
		Cancellation: &gamelanv1.TaskCancellation{TaskId: taskID, Reason: reason}}})
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
