package service

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/google/wire"
	ggrpc "google.golang.org/grpc"

	grpcadapter "github.com/gamelan-go/executor/internal/adapters/grpc"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/health"
	"github.com/gamelan-go/executor/internal/security"
)

// grpcSet provides what the gRPC transport, registrar and result sink share:
// the TLS configuration and the connection to the engine.
var grpcSet = wire.NewSet(newGRPCTLS, newEngineConn)

// streamReconnect paces reopening engine streams that fail or end empty.
var streamReconnect = domain.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2}

// grpcTLS is the client and server TLS configuration, nil for plaintext.
type grpcTLS struct {
	client, server *tls.Config
}

// newGRPCTLS reads the certificates when gRPC is used with TLS.
func newGRPCTLS(s *settings, p *plan) (grpcTLS, error) {
	g := s.GRPC
	if !g.UseSSL || !p.uses("grpc") {
		return grpcTLS{}, nil
	}
	clientCert, clientKey := g.ClientCertificatePath, g.ClientPrivateKeyPath
	if clientCert == "" {
		clientCert, clientKey = g.CertificatePath, g.PrivateKeyPath
	}
	client, err := security.ClientTLSConfig(string(g.CACertificatePath), string(clientCert), string(clientKey))
	if err != nil {
		return grpcTLS{}, fmt.Errorf("grpc client TLS: %w", err)
	}
	server, err := security.ServerTLSConfig(string(g.CertificatePath), string(g.PrivateKeyPath), string(g.CACertificatePath))
	if err != nil {
		return grpcTLS{}, fmt.Errorf("grpc server TLS: %w", err)
	}
	return grpcTLS{client: client, server: server}, nil
}

// engineConn is the connection to the engine's ExecutorService, and the
// watch that tells the runtime when it was remade (the engine may have
// forgotten us).
type engineConn struct {
	conn   *ggrpc.ClientConn
	client gamelanv1.ExecutorServiceClient
	watch  *grpcadapter.ConnectionWatch
}

// newEngineConn dials the engine when something uses gRPC, else returns nil.
func newEngineConn(s *settings, p *plan, t grpcTLS, tokens *security.Minter, log *slog.Logger) (*engineConn, func(), error) {
	if !p.uses("grpc") {
		return nil, func() {}, nil
	}
	g := s.GRPC
	cc := grpcadapter.ClientConfig{
		Target:                string(g.EngineTarget),
		TLS:                   t.client,
		KeepAliveTime:         g.KeepAliveTime.Duration(),
		KeepAliveTimeout:      g.KeepAliveTimeout.Duration(),
		KeepAliveWithoutCalls: g.KeepAliveWithoutCalls,
		MaxMessageSize:        int(g.MaxMessageSize),
	}
	if tokens != nil {
		cc.Credentials = tokens.PerRPCCredentials(t.client != nil)
	}
	conn, err := grpcadapter.Dial(cc)
	if err != nil {
		return nil, nil, err
	}
	watch := grpcadapter.NewConnectionWatch(conn, log.With(slog.String("component", "engine-connection")))
	return &engineConn{conn: conn, client: gamelanv1.NewExecutorServiceClient(conn), watch: watch}, func() {
		watch.Close()
		closing(log, "grpc connection to the engine", conn.Close)
	}, nil
}

// buildGRPC serves types over gRPC: the push server the engine calls, plus
// the pull intake GRPC_INTAKE chooses; results go back through ReportResults.
func buildGRPC(w *wiring, served []domain.Registration) (built, func(), error) {
	g := w.settings.GRPC
	push, err := grpcadapter.NewPushServer(grpcadapter.ServerConfig{
		Address:              net.JoinHostPort(string(g.Host), strconv.Itoa(int(g.Port))),
		TLS:                  w.grpcTLS.server,
		MaxConcurrentStreams: uint32(g.MaxConcurrentStreams),
		FlowControlWindow:    int32(g.FlowControlWindow),
		MaxMessageSize:       int(g.MaxMessageSize),
		KeepAliveTime:        g.KeepAliveTime.Duration(),
		KeepAliveTimeout:     g.KeepAliveTimeout.Duration(),
		Authenticate:         w.inbound,
		Executors:            served,
		// The health service answers from the HTTP probes' checks, so that
		// gRPC and HTTP probes agree (README, "Operating it").
		Health: health.NewGRPC(w.probes, 0, grpcadapter.PushServiceName),
	}, w.log.With(slog.String("component", "push-server")))
	if err != nil {
		return built{}, nil, err
	}
	closePush := closingSource(w.log, "grpc push server", push)
	intake := grpcadapter.IntakeConfig{Mode: string(g.Intake), Executors: served, Reconnect: streamReconnect,
		MaxMessageSize: int(g.MaxMessageSize), Watch: w.engine.watch}
	if w.tokens != nil {
		intake.StreamLifetime = w.tokens.RefreshAfter()
	}
	source, sink, err := grpcadapter.NewIntake(w.engine.conn, push, intake, w.log.With(slog.String("transport", "grpc")))
	if err != nil {
		closePush()
		return built{}, nil, err
	}
	endpoint := string(g.AdvertisedEndpoint)
	if endpoint == "" {
		endpoint = advertisedAddress(push.Addr())
	}
	return built{source: source, sink: sink, endpoint: endpoint}, closingSource(w.log, "grpc task source", source), nil
}

// grpcReportResults is the sink answering through the engine's
// ReportResults, for transports that take tasks another way (REST).
func grpcReportResults(w *wiring) *grpcadapter.ResultSink {
	return grpcadapter.NewResultSink(w.engine.client, int(w.settings.GRPC.MaxMessageSize)).Watching(w.engine.watch)
}

// grpcRegistrar registers with the engine's ExecutorService.
func grpcRegistrar(w *wiring) (controlPlane, error) {
	return controlPlane{
		registrar:   grpcadapter.NewRegistrar(w.engine.client).Watching(w.engine.watch),
		heartbeater: grpcadapter.NewHeartbeater(w.engine.client),
	}, nil
}

// advertisedAddress is a bound address the engine can dial: itself when
// it is a specific address, else the host name with its port (0.0.0.0 is
// not an address the engine can dial).
func advertisedAddress(bound net.Addr) string {
	host, port, _ := net.SplitHostPort(bound.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = hostName()
	}
	return net.JoinHostPort(host, port)
}
