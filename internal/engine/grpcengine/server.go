package grpcengine

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// Handler is the engine behind a Server: it keeps the registry and the
// results, and is told what executors say. Errors it returns should be gRPC
// status errors (NotRegistered, status.Error); the Server passes them on.
type Handler interface {
	// Register records a registration, which has an executor id.
	Register(req *gamelanv1.RegisterExecutorRequest) error
	// Unregister forgets an executor.
	Unregister(executorID string)
	// Heartbeat records a heartbeat, unary or on an ExecuteStream (whose
	// first message is one).
	Heartbeat(hb *gamelanv1.HeartbeatRequest) error
	// Results records results: a whole ReportResults batch (executorID
	// empty: the call names none) or one result of the ExecuteStream of
	// executorID. An error acknowledges none of them.
	Results(executorID string, results []*gamelanv1.TaskResult) error
	// Acknowledged records an ExecuteStream's acknowledgement of a task.
	Acknowledged(executorID string, ack *gamelanv1.TaskAcknowledgement)
	// StreamRequested is told of every StreamTasks call before anything
	// else is done with it; an error ends the call.
	StreamRequested(req *gamelanv1.StreamTasksRequest) error
	// MaxConcurrentTasks is how many tasks an ExecuteStream of the executor
	// may have outstanding: its registration's max_concurrent_tasks.
	MaxConcurrentTasks(executorID string) int32
	// StreamClosed is told that a task stream of the executor ended, with
	// the tasks it sent that are unanswered, which the Server forgets.
	StreamClosed(executorID string, unanswered []*gamelanv1.ExecutionTask)
}

// NotRegistered is the error a Handler returns for a call about an
// executor it does not know: codes.NotFound, which tells the executor to
// register again.
func NotRegistered(executorID string) error {
	return status.Errorf(codes.NotFound, "executor %q is not registered", executorID)
}

// RegisteredStatus is the status RegisterExecutor answers unless
// Config.EmptyRegistrationStatus is set.
const RegisteredStatus = "REGISTERED"

// Config configures a Server.
type Config struct {
	// ServerOptions are added to every grpc.Server the Server starts: TLS
	// credentials (grpc.Creds), interceptors, limits. The Server itself adds
	// grpc.WaitForHandlers(true), on which Stop relies.
	ServerOptions []grpc.ServerOption
	// Auth, when set, verifies every call but the health service's before
	// its handler runs: an error fails it with codes.Unauthenticated,
	// counted by Refused. It runs after an interceptor set with
	// grpc.UnaryInterceptor or grpc.StreamInterceptor, and before chained
	// ones.
	Auth func(ctx context.Context) error
	// EmptyRegistrationStatus answers RegisterExecutor with an empty status,
	// as the Gamelan engine does, instead of RegisteredStatus.
	EmptyRegistrationStatus bool
	// StreamTasksEndsAtOnce ends every StreamTasks call at once with no
	// task, as the Gamelan engine does. Queued tasks stay queued.
	StreamTasksEndsAtOnce bool
	// PushDialOptions are added to the connections Push makes, after the
	// plaintext default (so grpc.WithTransportCredentials replaces it).
	PushDialOptions []grpc.DialOption
}

// Server is the engine side of the gRPC protocol. Create it with New.
type Server struct {
	gamelanv1.UnimplementedExecutorServiceServer

	cfg     Config
	handler Handler

	// lifecycle serialises Start, Stop and Shutdown.
	lifecycle sync.Mutex
	server    *grpc.Server
	listener  net.Listener
	served    chan struct{} // closed when the server's Serve has returned
	addr      string
	failed    chan error // Serve's failures, at most one waiting
	// receivers are the ExecuteStream reading goroutines; Stop waits for them.
	receivers sync.WaitGroup

	pushMu    sync.Mutex
	pushConns map[string]*grpc.ClientConn // by executor address

	mu sync.Mutex
	// changed is closed and replaced on every change of the queues and
	// streams, so that streams waiting for tasks or room wake at once.
	changed chan struct{}
	// stopping is closed by Shutdown to end open streams; each Start has
	// its own.
	stopping chan struct{}
	refused  int
	queues   map[string][]*queued // by executor id, next first
	streams  map[*taskStream]struct{}
}

var _ gamelanv1.ExecutorServiceServer = (*Server)(nil)

// New returns a Server that tells handler what executors say. It serves
// nothing until Start.
func New(handler Handler, cfg Config) *Server {
	return &Server{
		cfg:       cfg,
		handler:   handler,
		failed:    make(chan error, 1),
		pushConns: make(map[string]*grpc.ClientConn),
		changed:   make(chan struct{}),
		stopping:  make(chan struct{}),
		queues:    make(map[string][]*queued),
		streams:   make(map[*taskStream]struct{}),
	}
}

// errAlreadyServing is returned by Start on a serving Server.
var errAlreadyServing = errors.New("grpcengine: already serving")

// Start serves the ExecutorService on lis in the background until Stop or
// Shutdown. After Stop, Start may serve again (on the same address, say),
// with the queues intact.
func (s *Server) Start(lis net.Listener) error {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if s.server != nil {
		return errAlreadyServing
	}
	opts := []grpc.ServerOption{grpc.WaitForHandlers(true)}
	if s.cfg.Auth != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(s.authUnary), grpc.ChainStreamInterceptor(s.authStream))
	}
	server := grpc.NewServer(append(opts, s.cfg.ServerOptions...)...)
	gamelanv1.RegisterExecutorServiceServer(server, s)
	served := make(chan struct{})
	s.mu.Lock()
	s.stopping = make(chan struct{})
	healthpb.RegisterHealthServer(server, healthService{stopping: s.stopping})
	s.mu.Unlock()
	s.server, s.listener, s.served, s.addr = server, lis, served, lis.Addr().String()
	go func() {
		defer close(served)
		if err := server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			select {
			case s.failed <- err:
			default:
			}
		}
	}()
	return nil
}

// Failed receives the error of a serve that ended on its own (its listener
// failed), not by Stop or Shutdown.
func (s *Server) Failed() <-chan error { return s.failed }

// Addr returns the address the Server serves on, or served on last; it is
// empty before the first Start.
func (s *Server) Addr() string {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	return s.addr
}

// Stop stops serving, hard: the listener and every connection close, open
// streams break (clients see codes.Unavailable), and Stop returns once every
// handler has returned. Queued tasks are kept. Stop is idempotent.
func (s *Server) Stop() {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.stopLocked(func(server *grpc.Server) { server.Stop() })
}

// Shutdown ends every open stream with codes.Unavailable (executors
// reconnect; they never end their streams on their own), then stops
// gracefully, letting calls in progress finish, or hard once ctx ends.
func (s *Server) Shutdown(ctx context.Context) {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	s.mu.Lock()
	select {
	case <-s.stopping:
	default:
		close(s.stopping)
	}
	s.mu.Unlock()
	s.stopLocked(func(server *grpc.Server) {
		stopped := make(chan struct{})
		go func() { server.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
			server.Stop()
			<-stopped
		}
	})
}

// stopLocked stops the current server with stop and waits for its
// goroutines. s.lifecycle must be held.
func (s *Server) stopLocked(stop func(*grpc.Server)) {
	if s.server == nil {
		return
	}
	stop(s.server)
	// Serve may not have started yet, in which case stopping the server did
	// not close the listener; closing it here frees the port either way.
	_ = s.listener.Close()
	<-s.served
	s.server, s.listener, s.served = nil, nil, nil
	s.receivers.Wait()
}

// Close stops serving and closes the connections Push made. The Server may
// be started and used for Push again afterwards. Close is idempotent.
func (s *Server) Close() {
	s.Stop()
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	for addr, conn := range s.pushConns {
		_ = conn.Close()
		delete(s.pushConns, addr)
	}
}

// Refused returns how many calls Config.Auth refused.
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

func (s *Server) refuse(method string, err error) error {
	s.mu.Lock()
	s.refused++
	s.mu.Unlock()
	return status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if isHealthCall(info.FullMethod) {
		return handler(ctx, req)
	}
	if err := s.cfg.Auth(ctx); err != nil {
		return nil, s.refuse(info.FullMethod, err)
	}
	return handler(ctx, req)
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if isHealthCall(info.FullMethod) {
		return handler(srv, ss)
	}
	if err := s.cfg.Auth(ss.Context()); err != nil {
		return s.refuse(info.FullMethod, err)
	}
	return handler(srv, ss)
}

// BearerToken returns the token of the incoming call's "authorization:
// Bearer <token>" metadata (the scheme in any case), for a Config.Auth hook
// and for push servers in tests. It reports false when there is none.
func BearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && token != "" {
			return token, true
		}
	}
	return "", false
}

// RegisterExecutor implements gamelanv1.ExecutorServiceServer.
func (s *Server) RegisterExecutor(_ context.Context, req *gamelanv1.RegisterExecutorRequest) (*gamelanv1.ExecutorRegistration, error) {
	if req.GetExecutorId() == "" {
		return nil, status.Error(codes.InvalidArgument, "register executor: executor_id is empty")
	}
	if err := s.handler.Register(req); err != nil {
		return nil, err
	}
	answer := &gamelanv1.ExecutorRegistration{ExecutorId: req.GetExecutorId(), RegisteredAt: timestamppb.Now()}
	if !s.cfg.EmptyRegistrationStatus {
		answer.Status = RegisteredStatus
	}
	return answer, nil
}

// UnregisterExecutor implements gamelanv1.ExecutorServiceServer.
func (s *Server) UnregisterExecutor(_ context.Context, req *gamelanv1.UnregisterExecutorRequest) (*emptypb.Empty, error) {
	s.handler.Unregister(req.GetExecutorId())
	return &emptypb.Empty{}, nil
}

// Heartbeat implements gamelanv1.ExecutorServiceServer.
func (s *Server) Heartbeat(_ context.Context, req *gamelanv1.HeartbeatRequest) (*emptypb.Empty, error) {
	if err := s.handler.Heartbeat(req); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// ReportResults implements gamelanv1.ExecutorServiceServer: it reads the
// whole batch, hands it to the Handler, and only then answers Empty, which
// acknowledges every result of the batch.
func (s *Server) ReportResults(stream grpc.ClientStreamingServer[gamelanv1.TaskResult, emptypb.Empty]) error {
	var batch []*gamelanv1.TaskResult
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		batch = append(batch, r)
	}
	if err := s.results("", batch, CallTrace(stream.Context())); err != nil {
		return err
	}
	return stream.SendAndClose(&emptypb.Empty{})
}

// results releases the tasks results answer, then hands the results to the
// Handler. The release comes first, and stands even when the Handler
// refuses the results: the executor no longer runs those tasks (it will
// send the results again), and an engine told of a result may give the
// stream its next task at once.
//
// A TracedHandler also gets each result's trace context: its output's
// reserved keys, else call's (the metadata of a ReportResults call carrying
// one result).
func (s *Server) results(executorID string, results []*gamelanv1.TaskResult, call *domain.TraceContext) error {
	s.mu.Lock()
	for _, r := range results {
		s.releaseLocked(ResultKey(r))
	}
	s.notifyLocked()
	s.mu.Unlock()
	if traced, ok := s.handler.(TracedHandler); ok {
		return traced.TracedResults(executorID, results, resultTraces(call, results))
	}
	return s.handler.Results(executorID, results)
}

// ResultKey is the key results are deduplicated on and answer tasks by:
// "runId:nodeId:attempt" (domain.IdempotencyKey).
func ResultKey(r *gamelanv1.TaskResult) string {
	return domain.IdempotencyKey(r.GetRunId(), r.GetNodeId(), int(r.GetAttempt()))
}

// taskKey is the key of a task, the ResultKey of its results.
func taskKey(t *gamelanv1.ExecutionTask) string {
	return domain.IdempotencyKey(t.GetRunId(), t.GetNodeId(), int(t.GetAttempt()))
}

// notifyLocked wakes every waiter. s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
