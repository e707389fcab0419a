package service

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	ggrpc "google.golang.org/grpc"

	grpcadapter "github.com/gamelan-go/executor/internal/adapters/grpc"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// The gRPC transport's pieces, built once each and shared by its ports.

// pushCloseTimeout bounds how long the push server waits for calls in
// progress when the service closes.
const pushCloseTimeout = 5 * time.Second

// streamReconnect paces reopening engine streams that fail or end empty.
var streamReconnect = domain.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2}

// tokenMinter returns the minter of this service's tokens, or nil when no
// JWT secret is set.
func (a *adapters) tokenMinter() (*security.Minter, error) {
	if a.tokensBuilt {
		return a.tokens, nil
	}
	a.tokensBuilt = true
	if a.cfg.JWTSecret == "" {
		a.log.Warn("no JWT secret: calls to the engine carry no token and inbound tasks are not authenticated")
		return nil, nil
	}
	minter, err := security.NewMinter(security.MinterConfig{
		Secret:        []byte(a.cfg.JWTSecret),
		Issuer:        a.cfg.JWTIssuer,
		Audience:      a.cfg.JWTAudience,
		TTL:           a.cfg.JWTTTL(),
		Subject:       a.cfg.Name,
		Name:          a.cfg.Name,
		Version:       a.cfg.Version,
		ExecutorTypes: a.executorTypes,
	})
	if err != nil {
		return nil, fmt.Errorf("token minter: %w", err)
	}
	a.tokens = minter
	return minter, nil
}

// inboundAuthenticator verifies the engine's tokens on push calls, or is nil
// when inbound authentication is off (said loudly) or there is no secret.
func (a *adapters) inboundAuthenticator() (func(string) error, error) {
	if a.cfg.JWTSecret == "" {
		return nil, nil
	}
	if a.cfg.JWTInbound == "off" {
		a.log.Warn("INBOUND AUTHENTICATION IS OFF: push tasks are accepted without a token (GAMELAN_EXECUTOR_JWT_INBOUND=off)")
		return nil, nil
	}
	verifier, err := security.NewVerifier(security.VerifierConfig{
		Secret:   []byte(a.cfg.JWTSecret),
		Issuer:   a.cfg.JWTInboundIssuer,
		Audience: a.cfg.JWTInboundAudience,
	})
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	return func(token string) error {
		_, err := verifier.Verify(token)
		return err
	}, nil
}

// grpcTLS returns the client and server TLS configs, or nils for plaintext.
func (a *adapters) grpcTLS() (client, server *tls.Config, err error) {
	if !a.cfg.GRPCUseSSL {
		return nil, nil, nil
	}
	clientCert, clientKey := a.cfg.GRPCClientCertificatePath, a.cfg.GRPCClientPrivateKeyPath
	if clientCert == "" {
		clientCert, clientKey = a.cfg.GRPCCertificatePath, a.cfg.GRPCPrivateKeyPath
	}
	client, err = security.ClientTLSConfig(a.cfg.GRPCCACertificatePath, clientCert, clientKey)
	if err != nil {
		return nil, nil, fmt.Errorf("grpc client TLS: %w", err)
	}
	server, err = security.ServerTLSConfig(a.cfg.GRPCCertificatePath, a.cfg.GRPCPrivateKeyPath, a.cfg.GRPCCACertificatePath)
	if err != nil {
		return nil, nil, fmt.Errorf("grpc server TLS: %w", err)
	}
	return client, server, nil
}

// grpcConnection returns the connection to the engine's ExecutorService.
func (a *adapters) grpcConnection() (*ggrpc.ClientConn, error) {
	if a.grpcConn != nil {
		return a.grpcConn, nil
	}
	clientTLS, _, err := a.grpcTLS()
	if err != nil {
		return nil, err
	}
	minter, err := a.tokenMinter()
	if err != nil {
		return nil, err
	}
	cc := grpcadapter.ClientConfig{
		Target:                a.cfg.EngineGRPCTarget,
		TLS:                   clientTLS,
		KeepAliveTime:         a.cfg.GRPCKeepAliveTime(),
		KeepAliveTimeout:      a.cfg.GRPCKeepAliveTimeout(),
		KeepAliveWithoutCalls: a.cfg.GRPCKeepAliveWithoutCalls,
		MaxMessageSize:        a.cfg.GRPCMaxMessageSize,
	}
	if minter != nil {
		cc.Credentials = minter.PerRPCCredentials(clientTLS != nil)
	}
	conn, err := grpcadapter.Dial(cc)
	if err != nil {
		return nil, err
	}
	a.grpcConn = conn
	a.onClose("grpc connection to the engine", conn.Close)
	a.grpcWatch = grpcadapter.NewConnectionWatch(conn, a.log.With(slog.String("component", "engine-connection")))
	a.onClose("grpc connection watch", func() error { a.grpcWatch.Close(); return nil })
	return conn, nil
}

// grpcIntake returns the gRPC task source (the push server plus the
// configured pull intake) and the sink that answers its tasks.
func (a *adapters) grpcIntake(served []domain.Registration) (*grpcadapter.TaskSource, *grpcadapter.ResultSink, error) {
	if a.grpcSource != nil {
		return a.grpcSource, a.grpcSink, nil
	}
	minter, err := a.tokenMinter()
	if err != nil {
		return nil, nil, err
	}
	conn, err := a.grpcConnection()
	if err != nil {
		return nil, nil, err
	}
	_, serverTLS, err := a.grpcTLS()
	if err != nil {
		return nil, nil, err
	}
	authenticate, err := a.inboundAuthenticator()
	if err != nil {
		return nil, nil, err
	}
	push, err := grpcadapter.NewPushServer(grpcadapter.ServerConfig{
		Address:              net.JoinHostPort(a.cfg.GRPCHost, strconv.Itoa(a.cfg.GRPCPort)),
		TLS:                  serverTLS,
		MaxConcurrentStreams: uint32(a.cfg.GRPCMaxConcurrentStreams),
		FlowControlWindow:    int32(a.cfg.GRPCFlowControlWindow),
		MaxMessageSize:       a.cfg.GRPCMaxMessageSize,
		KeepAliveTime:        a.cfg.GRPCKeepAliveTime(),
		KeepAliveTimeout:     a.cfg.GRPCKeepAliveTimeout(),
		Authenticate:         authenticate,
		Executors:            served,
	}, a.log.With(slog.String("component", "push-server")))
	if err != nil {
		return nil, nil, err
	}
	a.grpcPush = push
	a.onClose("grpc push server", func() error { push.Close(pushCloseTimeout); return nil })

	intake := grpcadapter.IntakeConfig{Mode: a.cfg.GRPCIntake, Executors: served, Reconnect: streamReconnect,
		MaxMessageSize: a.cfg.GRPCMaxMessageSize, Watch: a.grpcWatch}
	if minter != nil {
		intake.StreamLifetime = minter.RefreshAfter()
	}
	source, sink, err := grpcadapter.NewIntake(conn, push, intake, a.log.With(slog.String("transport", "grpc")))
	if err != nil {
		return nil, nil, err
	}
	a.grpcSource, a.grpcSink = source, sink
	return source, sink, nil
}
