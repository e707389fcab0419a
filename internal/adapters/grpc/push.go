package grpc

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// Executors are the executor types served over gRPC, used to route push
	// requests, which name no type.
	Executors []domain.Registration
}

// PushServer serves tech.kayys.gamelan.dispatcher.Executor/Execute, the way
// the Gamelan engine delivers tasks, and the standard gRPC health service.
// It listens from construction (so that the endpoint registered with the
// engine answers), refuses tasks with 503 until Start and after Stop, and
// acknowledges each accepted task at once: the task runs asynchronously and
// its result goes through ReportResults.
//
// Refusals: 400 for a malformed request or one no hosted type matches, 401
// when authentication fails, 503 when the runtime is full or draining.
type PushServer struct {
	dispatcherpb.UnimplementedExecutorServer

	cfg      ServerConfig
	log      *slog.Logger
	server   *ggrpc.Server
	health   *health.Server
	listener net.Listener
	served   chan struct{}

	mu     sync.RWMutex
	intake ports.Intake // nil before Start and after Stop
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
	p := &PushServer{cfg: cfg, log: log, listener: listener, health: health.NewServer(), served: make(chan struct{})}
	p.server = ggrpc.NewServer(serverOptions(cfg)...)
	dispatcherpb.RegisterExecutorServer(p.server, p)
	healthpb.RegisterHealthServer(p.server, p.health)
	p.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	go func() {
		defer close(p.served)
		if err := p.server.Serve(listener); err != nil {
			log.Error("push server stopped", slog.Any("error", err))
		}
	}()
	log.Info("push server listening", slog.String("addr", listener.Addr().String()), slog.Bool("tls", cfg.TLS != nil))
	return p, nil
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
	p.mu.Lock()
	p.intake = intake
	p.mu.Unlock()
	p.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return nil
}

// Stop implements ports.TaskSource: from now on tasks are refused with 503.
// The server keeps answering (refusals, health) until Close.
func (p *PushServer) Stop(context.Context) error {
	p.mu.Lock()
	p.intake = nil
	p.mu.Unlock()
	p.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return nil
}

// Close stops the server, waiting up to timeout for calls in progress.
func (p *PushServer) Close(timeout time.Duration) {
	stopped := make(chan struct{})
	go func() { p.server.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		p.server.Stop()
		<-stopped
	}
	<-p.served
}

// Execute implements the dispatcher's Executor service.
func (p *PushServer) Execute(ctx context.Context, req *dispatcherpb.ExecutionRequest) (*dispatcherpb.ExecutionAck, error) {
	if p.cfg.Authenticate != nil {
		if err := p.authenticate(ctx); err != nil {
			p.log.Warn("push task refused: authentication failed",
				slog.String("run_id", req.GetRunId()), slog.String("node_id", req.GetNodeId()), slog.Any("error", err))
			return refuse(ackUnauthenticated, err.Error()), nil
		}
	}
	if req.GetRunId() == "" || req.GetNodeId() == "" {
		return refuse(ackBadRequest, "run_id and node_id are required"), nil
	}
	task := taskFromPush(req)
	if err := p.route(req, &task); err != nil {
		return refuse(ackBadRequest, err.Error()), nil
	}
	p.mu.RLock()
	intake := p.intake
	p.mu.RUnlock()
	if intake == nil {
		return refuse(ackUnavailable, "executor is not accepting tasks (starting or shutting down)"), nil
	}
	err := intake.Offer(ctx, ports.Delivery{Task: &task})
	switch {
	case err == nil:
		return &dispatcherpb.ExecutionAck{Accepted: true, Code: ackAccepted, Message: "accepted"}, nil
	case errors.Is(err, domain.ErrOverloaded), errors.Is(err, domain.ErrDraining):
		return refuse(ackUnavailable, err.Error()), nil
	default:
		return refuse(ackBadRequest, err.Error()), nil
	}
}

func refuse(code int32, message string) *dispatcherpb.ExecutionAck {
	return &dispatcherpb.ExecutionAck{Accepted: false, Code: code, Message: message}
}

func (p *PushServer) authenticate(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		return fmt.Errorf("%w: no authorization metadata", domain.ErrUnauthenticated)
	}
	token, err := security.BearerToken(values[0])
	if err != nil {
		return err
	}
	return p.cfg.Authenticate(token)
}

// route picks the executor type for a push request, which names none (see
// PROTOCOL.md 1.2), and records the choice on the task: the executor id the
// signature carries, else the __node_type__ variable, else a node id that is
// a supported node type, else the only hosted type.
func (p *PushServer) route(req *dispatcherpb.ExecutionRequest, task *domain.Task) error {
	var tried []string
	if id, ok := executorIDFromSignature(req.GetSignature(), req.GetRunId()); ok {
		for _, reg := range p.cfg.Executors {
			if reg.ExecutorID == id {
				task.ExecutorID, task.ExecutorType = id, reg.Descriptor.Type
				return nil
			}
		}
		tried = append(tried, fmt.Sprintf("signature names executor %q, not hosted here", id))
	} else {
		tried = append(tried, "no usable signature")
	}
	if nodeType := req.GetVariables()[domain.NodeTypeKey]; nodeType != "" {
		if reg, ok := p.supporting(nodeType); ok {
			task.NodeType, task.ExecutorType = nodeType, reg.Descriptor.Type
			return nil
		}
		tried = append(tried, fmt.Sprintf("%s %q is not supported here", domain.NodeTypeKey, nodeType))
	} else {
		tried = append(tried, "no "+domain.NodeTypeKey+" variable")
	}
	if reg, ok := p.supporting(req.GetNodeId()); ok {
		task.NodeType, task.ExecutorType = req.GetNodeId(), reg.Descriptor.Type
		return nil
	}
	tried = append(tried, fmt.Sprintf("node id %q is not a supported node type", req.GetNodeId()))
	if len(p.cfg.Executors) == 1 {
		task.ExecutorType = p.cfg.Executors[0].Descriptor.Type
		return nil
	}
	tried = append(tried, fmt.Sprintf("%d executor types are hosted", len(p.cfg.Executors)))
	return fmt.Errorf("no executor type for run %s node %s: %s", req.GetRunId(), req.GetNodeId(), strings.Join(tried, "; "))
}

func (p *PushServer) supporting(nodeType string) (domain.Registration, bool) {
	for _, reg := range p.cfg.Executors {
		if reg.Descriptor.Supports(nodeType) {
			return reg, true
		}
	}
	return domain.Registration{}, false
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
