package grpc

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// Ack codes of ExecutionAck, read like HTTP statuses by the engine.
const (
	ackAccepted        = 200
	ackBadRequest      = 400
	ackUnauthenticated = 401
	ackUnavailable     = 503
)

// ServerConfig configures the push server.
type ServerConfig struct {
	// Address is the host:port to listen on; port 0 picks a free port.
	Address string
	// TLS, when set, serves TLS (mutual TLS when it requires client
	// certificates); nil means plaintext, which is what the Gamelan engine
	// dials.
	TLS *tls.Config
	// MaxConcurrentStreams bounds concurrent calls per connection (1000 if 0).
	MaxConcurrentStreams uint32
	// FlowControlWindow is the initial window per stream and per
	// connection, in bytes (grpc-go's default if 0).
	FlowControlWindow int32
	// MaxMessageSize bounds messages received and sent, in bytes (4 MiB if
	// 0); a larger request is refused with ResourceExhausted.
	MaxMessageSize int
	// KeepAliveTime and KeepAliveTimeout are the server's pings on idle
	// connections.
	KeepAliveTime, KeepAliveTimeout time.Duration
	// Authenticate verifies the bearer token of an inbound Execute call; an
	// error refuses the task with 401. Nil accepts every call (inbound
	// authentication off).
	Authenticate func(token string) error
	// Executors are the executor types served over gRPC.
	Executors []domain.Registration
	// Health, when set, answers the standard health service
	// (grpc.health.v1.Health) in place of the server's own, which says
	// SERVING for "" between Start and Stop only. The service runs serve it
	// from their health probes. Health calls need no bearer token either
	// way: only Execute authenticates.
	Health healthpb.HealthServer
}

// PushServiceName is the full name of the gRPC service the push server
// serves, as health checks name it.
const PushServiceName = "tech.kayys.gamelan.dispatcher.Executor"

// PushServer serves tech.kayys.gamelan.dispatcher.Executor/Execute, the way
// the Gamelan engine delivers tasks, and the standard gRPC health service.
// It listens from construction (so that the endpoint registered with the
// engine answers), refuses tasks with 503 until Start and after Stop, and
// acknowledges each accepted task at once: the task runs asynchronously and
// its result goes through ReportResults.
//
// A push names no executor type: the server passes the executor id its
// signature names (a routing hint) and the variables (which may declare
// __node_type__) to the runtime, whose routing rule decides; a task no
// hosted type may run is accepted and answered FAILED NO_EXECUTOR.
//
// Refusals: 400 for a malformed request (ids, attempt and idempotency key
// are checked by the runtime, domain.Task.Validate), 401 when
// authentication fails, 503 when the runtime is full or draining. Refusals
// are logged with bounded values, at most a few lines per interval.
type PushServer struct {
	dispatcherpb.UnimplementedExecutorServer

	server   *ggrpc.Server
	health   *health.Server // the server's own health service; nil when one is given
	listener net.Listener
	served   chan struct{}
	closing  sync.Once
	// gate authenticates, offers and classifies each task, and refuses them
	// before Start and after Stop.
	gate *ports.Gate
}

var _ ports.TaskSource = (*PushServer)(nil)

// NewPushServer listens on cfg.Address and starts serving.
func NewPushServer(cfg ServerConfig, log *slog.Logger) (*PushServer, error) {
	if len(cfg.Executors) == 0 {
		return nil, errors.New("push server: no executor types to serve")
	}
	listener, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("push server: listen on %s: %w", cfg.Address, err)
	}
	p := &PushServer{listener: listener, served: make(chan struct{}),
		gate: ports.NewGate(ports.GateConfig{Name: "push", Authenticate: cfg.Authenticate, Log: log, Refusals: telemetry.NewThrottle(0, 0)})}
	p.server = ggrpc.NewServer(serverOptions(cfg)...)
	dispatcherpb.RegisterExecutorServer(p.server, p)
	healthpb.RegisterHealthServer(p.server, p.healthServer(cfg.Health))
	go func() {
		defer close(p.served)
		if err := p.server.Serve(listener); err != nil {
			log.Error("push server stopped", slog.Any("error", err))
		}
	}()
	log.Info("push server listening", slog.String("addr", listener.Addr().String()), slog.Bool("tls", cfg.TLS != nil))
	return p, nil
}

// healthServer is given when set; otherwise it is the server's own, kept in
// p.health, NOT_SERVING until Start.
func (p *PushServer) healthServer(given healthpb.HealthServer) healthpb.HealthServer {
	if given != nil {
		return given
	}
	p.health = health.NewServer()
	p.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return p.health
}

func serverOptions(cfg ServerConfig) []ggrpc.ServerOption {
	maxSize := orDefaultMaxSize(cfg.MaxMessageSize)
	streams := cfg.MaxConcurrentStreams
	if streams == 0 {
		streams = 1000
	}
	opts := []ggrpc.ServerOption{
		ggrpc.MaxRecvMsgSize(maxSize),
		ggrpc.MaxSendMsgSize(maxSize),
		ggrpc.MaxConcurrentStreams(streams),
		ggrpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepAliveTime, Timeout: cfg.KeepAliveTimeout}),
		// Engines ping at grpc-go's client floor; do not punish them for it.
		ggrpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minKeepAliveTime / 2, PermitWithoutStream: true}),
	}
	if cfg.FlowControlWindow > 0 {
		opts = append(opts, ggrpc.InitialWindowSize(cfg.FlowControlWindow), ggrpc.InitialConnWindowSize(cfg.FlowControlWindow))
	}
	if cfg.TLS != nil {
		opts = append(opts, ggrpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	return opts
}

// Addr is the address the server listens on.
func (p *PushServer) Addr() net.Addr { return p.listener.Addr() }

// Start implements ports.TaskSource: tasks are accepted from now on. A ctx
// that has already ended fails Start, and tasks are still refused.
func (p *PushServer) Start(ctx context.Context, intake ports.Intake) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start push server: %w", err)
	}
	p.gate.Attach(intake)
	p.setServing(healthpb.HealthCheckResponse_SERVING)
	return nil
}

// Stop implements ports.TaskSource: from now on tasks are refused with 503,
// and no Offer follows its return (it waits for those in progress). The
// server keeps answering (refusals, health) until Close.
func (p *PushServer) Stop(context.Context) error {
	p.gate.Detach()
	p.setServing(healthpb.HealthCheckResponse_NOT_SERVING)
	return nil
}

// setServing sets the status of the server's own health service; a given
// one follows its own checks.
func (p *PushServer) setServing(s healthpb.HealthCheckResponse_ServingStatus) {
	if p.health != nil {
		p.health.SetServingStatus("", s)
	}
}

// Close implements ports.TaskSource: it stops the source if it was not
// stopped, then stops the server, letting calls in progress finish until ctx
// ends and cutting them short then (returning ctx's cause). Pushed tasks
// carry no Settle, so nothing else is held. Close is idempotent: a second
// call waits for the first to finish.
func (p *PushServer) Close(ctx context.Context) error {
	_ = p.Stop(ctx)
	var err error
	p.closing.Do(func() { err = ports.StopWithin(ctx, p.server.GracefulStop, p.server.Stop) })
	<-p.served
	if err != nil {
		return fmt.Errorf("close push server: %w", err)
	}
	return nil
}

// Execute implements the dispatcher's Executor service: the gate decides,
// and its verdict becomes an ack code.
func (p *PushServer) Execute(ctx context.Context, req *dispatcherpb.ExecutionRequest) (*dispatcherpb.ExecutionAck, error) {
	verdict, err := p.gate.Admit(ctx, ports.Pushed{
		RunID: req.GetRunId(), NodeID: req.GetNodeId(),
		Token: func() (string, error) { return bearerToken(ctx) },
		Task:  func() (domain.Task, error) { return taskFromRequest(ctx, req), nil },
	})
	switch verdict {
	case ports.Accepted:
		return &dispatcherpb.ExecutionAck{Accepted: true, Code: ackAccepted, Message: "accepted"}, nil
	case ports.Unauthenticated:
		return refuse(ackUnauthenticated, err.Error()), nil
	case ports.BadRequest:
		return refuse(ackBadRequest, err.Error()), nil
	default:
		setRetryAfter(ctx, err)
		return refuse(ackUnavailable, err.Error()), nil
	}
}

// setRetryAfter sends a rate-limit refusal's delay as the call's
// "retry-after" response header, in whole seconds rounded up (at least 1),
// as HTTP's Retry-After; the ack's message names it in milliseconds. Other
// refusals carry no delay and send no header.
func setRetryAfter(ctx context.Context, err error) {
	if delay, limited := domain.RetryAfter(err); limited {
		// An error means the call has ended or sent its headers: the
		// message still carries the delay.
		_ = ggrpc.SetHeader(ctx, metadata.Pairs("retry-after", strconv.FormatInt(domain.RetryAfterSeconds(delay), 10)))
	}
}

func refuse(code int32, message string) *dispatcherpb.ExecutionAck {
	return &dispatcherpb.ExecutionAck{Accepted: false, Code: code, Message: message}
}

// taskFromRequest builds the pushed task, with the executor id the
// signature names as a routing hint and the trace context of the call's
// metadata (a push carries one task, so its metadata is the task's). The
// runtime validates it.
func taskFromRequest(ctx context.Context, req *dispatcherpb.ExecutionRequest) domain.Task {
	task := taskFromPush(req)
	task.Trace = traceFromMetadata(ctx)
	if id, ok := executorIDFromSignature(req.GetSignature(), req.GetRunId()); ok && domain.ValidID(id) {
		task.ExecutorID = id
	}
	return task
}

// bearerToken reads the bearer token of an inbound call, which must carry
// exactly one authorization value (see security.SingleBearerToken).
func bearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return "", fmt.Errorf("%w: no authorization metadata", domain.ErrUnauthenticated)
	}
	return security.SingleBearerToken(values)
}

// executorIDFromSignature decodes a Gamelan push signature: standard Base64
// of the run id immediately followed by the executor id the engine chose.
func executorIDFromSignature(signature, runID string) (string, bool) {
	if signature == "" {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return "", false
	}
	id, ok := strings.CutPrefix(string(raw), runID)
	if !ok || id == "" {
		return "", false
	}
	return id, true
}
