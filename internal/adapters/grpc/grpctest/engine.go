package grpctest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
)

// Option configures an Engine.
type Option func(*grpcengine.Config)

// WithServerOptions adds options to every grpc.Server the engine starts:
// TLS credentials (grpc.Creds), interceptors (grpc.UnaryInterceptor,
// grpc.ChainStreamInterceptor, ...), limits. The engine itself adds
// grpc.WaitForHandlers(true), on which Stop relies; do not turn it off.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(c *grpcengine.Config) { c.ServerOptions = append(c.ServerOptions, opts...) }
}

// WithAuth verifies every RPC the engine serves, unary and streaming, before
// its handler runs: when verify returns an error the call fails with
// codes.Unauthenticated, the handler does not run, and Refused counts it.
// verify receives the call's incoming context (see BearerToken). The check
// runs after an interceptor set with grpc.UnaryInterceptor or
// grpc.StreamInterceptor through WithServerOptions, and before those added
// with grpc.ChainUnaryInterceptor or grpc.ChainStreamInterceptor.
func WithAuth(verify func(ctx context.Context) error) Option {
	return func(c *grpcengine.Config) { c.Auth = verify }
}

// WithEmptyRegistrationStatus answers RegisterExecutor with an empty status,
// as the Gamelan engine does, instead of "REGISTERED".
func WithEmptyRegistrationStatus() Option {
	return func(c *grpcengine.Config) { c.EmptyRegistrationStatus = true }
}

// WithStreamTasksCompletesImmediately makes StreamTasks end at once with no
// task, as the Gamelan engine does, so that an adapter's reconnect backoff
// can be observed through StreamCalls. Queued tasks stay queued.
func WithStreamTasksCompletesImmediately() Option {
	return func(c *grpcengine.Config) { c.StreamTasksEndsAtOnce = true }
}

// WithPushDialOptions adds options to the connections Push makes (after the
// plaintext default, so grpc.WithTransportCredentials replaces it).
func WithPushDialOptions(opts ...grpc.DialOption) Option {
	return func(c *grpcengine.Config) { c.PushDialOptions = append(c.PushDialOptions, opts...) }
}

// RegisteredStatus is the status RegisterExecutor answers unless
// WithEmptyRegistrationStatus is given.
const RegisteredStatus = grpcengine.RegisteredStatus

// Engine is the engine side of the gRPC protocol for tests: a
// grpcengine.Server (ExecutorService, task queues and flow control,
// cancellations, Push) whose Handler records everything executors say. See
// the package documentation. Create it with NewEngine.
type Engine struct {
	*grpcengine.Server
	rec *recorder
}

// NewEngine returns an engine with no registrations, no queued tasks and no
// server: call Start or StartAt to serve.
func NewEngine(opts ...Option) *Engine {
	var cfg grpcengine.Config
	for _, o := range opts {
		o(&cfg)
	}
	rec := newRecorder()
	return &Engine{Server: grpcengine.New(rec, cfg), rec: rec}
}

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
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("grpctest: start engine at %s: %v", addr, err)
	}
	if err := e.Server.Start(lis); err != nil {
		_ = lis.Close()
		t.Fatalf("grpctest: start engine at %s: %v (serving at %s)", addr, err, e.Addr())
	}
	t.Cleanup(e.Close)
	return lis.Addr().String()
}

// BearerToken returns the token of the incoming call's "authorization:
// Bearer <token>" metadata, for a WithAuth hook (and for push servers in
// tests). It reports false when there is none.
func BearerToken(ctx context.Context) (string, bool) { return grpcengine.BearerToken(ctx) }

// Signature returns the signature the Gamelan engine puts on a push request:
// standard Base64 of runID immediately followed by executorID.
func Signature(runID, executorID string) string { return grpcengine.Signature(runID, executorID) }
