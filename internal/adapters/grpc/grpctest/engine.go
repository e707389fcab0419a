package grpctest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// Option configures an Engine.
type Option func(*Engine)

// WithServerOptions adds options to every grpc.Server the engine starts:
// TLS credentials (grpc.Creds), interceptors (grpc.UnaryInterceptor,
// grpc.ChainStreamInterceptor, ...), limits. The engine itself adds
// grpc.WaitForHandlers(true), on which Stop relies; do not turn it off.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(e *Engine) { e.serverOpts = append(e.serverOpts, opts...) }
}

// WithAuth verifies every RPC the engine serves, unary and streaming, before
// its handler runs: when verify returns an error the call fails with
// codes.Unauthenticated, the handler does not run, and Refused counts it.
// verify receives the call's incoming context (see BearerToken). The check
// runs after an interceptor set with grpc.UnaryInterceptor or
// grpc.StreamInterceptor through WithServerOptions, and before those added
// with grpc.ChainUnaryInterceptor or grpc.ChainStreamInterceptor.
func WithAuth(verify func(ctx context.Context) error) Option {
	return func(e *Engine) { e.verify = verify }
}

// WithEmptyRegistrationStatus answers RegisterExecutor with an empty status,
// as the Gamelan engine does, instead of "REGISTERED".
func WithEmptyRegistrationStatus() Option {
	return func(e *Engine) { e.emptyRegistrationStatus = true }
}

// WithStreamTasksCompletesImmediately makes StreamTasks end at once with no
// task, as the Gamelan engine does, so that an adapter's reconnect backoff
// can be observed through StreamCalls. Queued tasks stay queued.
func WithStreamTasksCompletesImmediately() Option {
	return func(e *Engine) { e.streamTasksCompletesImmediately = true }
}

// WithPushDialOptions adds options to the connections Push makes (after the
// plaintext default, so grpc.WithTransportCredentials replaces it).
func WithPushDialOptions(opts ...grpc.DialOption) Option {
	return func(e *Engine) { e.pushDialOpts = append(e.pushDialOpts, opts...) }
}

// RegisteredStatus is the status RegisterExecutor answers unless
// WithEmptyRegistrationStatus is given.
const RegisteredStatus = "REGISTERED"

// Engine is the engine side of the executor protocol for tests: it serves
// gamelanv1.ExecutorService and pushes to executors' Execute. See the
// package documentation for what each RPC does. Create it with NewEngine.
type Engine struct {
	gamelanv1.UnimplementedExecutorServiceServer

	serverOpts                      []grpc.ServerOption
	verify                          func(ctx context.Context) error
	emptyRegistrationStatus         bool
	streamTasksCompletesImmediately bool
	pushDialOpts                    []grpc.DialOption

	// lifecycle serialises Start, Stop and Close.
	lifecycle sync.Mutex
	server    *grpc.Server
	listener  net.Listener
	served    chan struct{} // closed when the server's Serve has returned
	addr      string
	// receivers are the ExecuteStream reading goroutines; Stop waits for them.
	receivers sync.WaitGroup

	pushMu    sync.Mutex
	pushConns map[string]*grpc.ClientConn // by executor address

	mu sync.Mutex
	// changed is closed and replaced on every change of state, so that
	// streams waiting for tasks or capacity, and WaitForResults, wake
	// without polling.
	changed chan struct{}

	registrations map[string]*gamelanv1.RegisterExecutorRequest
	registerCalls map[string]int
	unregistered  []string
	heartbeats    map[string][]*gamelanv1.HeartbeatRequest
	acks          map[string][]*gamelanv1.TaskAcknowledgement
	refused       int

	queues      map[string][]*gamelanv1.ExecutionTask // by executor id, next first
	streams     map[*taskStream]struct{}              // open task streams
	streamCalls map[string]int                        // StreamTasks calls by executor id
	// streamMaxConcurrent holds each StreamTasks call's max_concurrent, by
	// executor id, in call order.
	streamMaxConcurrent map[string][]int32

	results           []*gamelanv1.TaskResult
	unique            map[string]*gamelanv1.TaskResult
	duplicates        int
	failReportResults int
}

// NewEngine returns an engine with no registrations, no queued tasks and no
// server: call Start or StartAt to serve.
func NewEngine(opts ...Option) *Engine {
	e := &Engine{
		changed:             make(chan struct{}),
		pushConns:           make(map[string]*grpc.ClientConn),
		registrations:       make(map[string]*gamelanv1.RegisterExecutorRequest),
		registerCalls:       make(map[string]int),
		heartbeats:          make(map[string][]*gamelanv1.HeartbeatRequest),
		acks:                make(map[string][]*gamelanv1.TaskAcknowledgement),
		queues:              make(map[string][]*gamelanv1.ExecutionTask),
		streams:             make(map[*taskStream]struct{}),
		streamCalls:         make(map[string]int),
		streamMaxConcurrent: make(map[string][]int32),
		unique:              make(map[string]*gamelanv1.TaskResult),
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

var _ gamelanv1.ExecutorServiceServer = (*Engine)(nil)

// Start serves the engine on a free port of 127.0.0.1 and returns the
// address. It registers Close as a cleanup of t and fails t when the engine
// is already serving or cannot listen.
func (e *Engine) Start(t testing.TB) string {
	t.Helper()
	return e.StartAt(t, "127.0.0.1:0")
}

// StartAt serves the engine on addr, which must be on 127.0.0.1 (port 0
// picks a free one), and returns the address actually bound. After Stop,
// StartAt(t, e.Addr()) brings the engine back on the same port with its
// state intact, so that a test can watch an executor reconnect. It registers
// Close as a cleanup of t and fails t when the engine is already serving or
// cannot listen.
func (e *Engine) StartAt(t testing.TB, addr string) string {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("grpctest: start engine at %q: want an address on 127.0.0.1", addr)
	}
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	if e.server != nil {
		t.Fatalf("grpctest: start engine at %s: already serving at %s", addr, e.addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("grpctest: start engine at %s: %v", addr, err)
	}
	opts := []grpc.ServerOption{grpc.WaitForHandlers(true)}
	if e.verify != nil {
		opts = append(opts,
			grpc.ChainUnaryInterceptor(e.authUnary),
			grpc.ChainStreamInterceptor(e.authStream))
	}
	opts = append(opts, e.serverOpts...)
	server := grpc.NewServer(opts...)
	gamelanv1.RegisterExecutorServiceServer(server, e)
	served := make(chan struct{})
	e.server, e.listener, e.served = server, lis, served
	e.addr = lis.Addr().String()
	t.Cleanup(e.Close)
	go func() {
		defer close(served)
		_ = server.Serve(lis)
	}()
	return e.addr
}

// Addr returns the address the engine serves on, or served on last after
// Stop; it is empty before the first Start.
func (e *Engine) Addr() string {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	return e.addr
}

// Stop stops serving, hard: the listener and every connection close, open
// streams break (clients see codes.Unavailable), and Stop returns once every
// handler has returned. The engine's state is kept. Stop is idempotent.
func (e *Engine) Stop() {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	if e.server == nil {
		return
	}
	e.server.Stop()
	// Serve may not have started yet, in which case server.Stop did not close
	// the listener; closing it here frees the port for StartAt either way.
	_ = e.listener.Close()
	<-e.served
	e.server, e.listener, e.served = nil, nil, nil
	e.receivers.Wait()
}

// Close stops serving and closes the connections Push made. The engine may
// be started and used for Push again afterwards. Close is idempotent.
func (e *Engine) Close() {
	e.Stop()
	e.pushMu.Lock()
	defer e.pushMu.Unlock()
	for addr, conn := range e.pushConns {
		_ = conn.Close()
		delete(e.pushConns, addr)
	}
}

// Refused returns how many calls WithAuth's hook refused.
func (e *Engine) Refused() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refused
}

func (e *Engine) refuse(method string, err error) error {
	e.mu.Lock()
	e.refused++
	e.notifyLocked()
	e.mu.Unlock()
	return status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
}

func (e *Engine) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := e.verify(ctx); err != nil {
		return nil, e.refuse(info.FullMethod, err)
	}
	return handler(ctx, req)
}

func (e *Engine) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := e.verify(ss.Context()); err != nil {
		return e.refuse(info.FullMethod, err)
	}
	return handler(srv, ss)
}

// BearerToken returns the token of the incoming call's "authorization:
// Bearer <token>" metadata, for a WithAuth hook (and for push servers in
// tests). It reports false when there is none.
func BearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if token, ok := strings.CutPrefix(v, "Bearer "); ok && token != "" {
			return token, true
		}
	}
	return "", false
}

// notifyLocked wakes every waiter. e.mu must be held.
func (e *Engine) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}
