package grpc

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Tokens and TLS, both directions (docs/protocol.md, section 6).

const (
	engineIssuer   = "gamelan-engine" // iss of the tokens the engine sends on push
	executorIssuer = "tax-service"    // iss of the tokens the executor sends
)

func newMinter(t *testing.T, cfg security.MinterConfig) *security.Minter {
	t.Helper()
	if cfg.Audience == "" {
		cfg.Audience = "executors"
	}
	if cfg.Subject == "" {
		cfg.Subject = cfg.Issuer
	}
	if cfg.TTL == 0 {
		cfg.TTL = 5 * time.Minute
	}
	minter, err := security.NewMinter(cfg)
	require.NoError(t, err, "NewMinter")
	return minter
}

func mint(t *testing.T, cfg security.MinterConfig) string {
	t.Helper()
	token, err := newMinter(t, cfg).Token("")
	require.NoError(t, err, "mint")
	return token
}

func newVerifier(t *testing.T, secret []byte, issuer string) *security.Verifier {
	t.Helper()
	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: secret, Issuer: issuer})
	require.NoError(t, err, "NewVerifier")
	return verifier
}

// unsignedToken is a well-formed token with alg none and valid claims.
func unsignedToken(t *testing.T, issuer string) string {
	t.Helper()
	segment := func(v any) string {
		raw, err := json.Marshal(v)
		require.NoError(t, err)
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	now := time.Now()
	return segment(map[string]any{"alg": "none", "typ": "JWT"}) + "." +
		segment(map[string]any{"iss": issuer, "sub": issuer, "aud": []string{"executors"}, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}) + "."
}

// withBearer returns ctx carrying "authorization: Bearer token" to the
// executor.
func withBearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestPushInboundToken checks that with ServerConfig.Authenticate wired to
// a Verifier, a push is accepted with a valid engine token only: a missing,
// expired, wrongly signed, alg none or wrongly issued token is refused with
// 401 and nothing is offered.
func TestPushInboundToken(t *testing.T) {
	secret := securitytest.Secret(t)
	verifier := newVerifier(t, secret, engineIssuer)
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{
		Authenticate: func(token string) error {
			_, err := verifier.Verify(token)
			return err
		},
	}, 16)

	valid := security.MinterConfig{Secret: secret, Issuer: engineIssuer}
	expired := valid
	expired.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	wrongSecret := valid
	wrongSecret.Secret = securitytest.Secret(t)
	wrongIssuer := valid
	wrongIssuer.Issuer = "somebody-else"

	// Each token with the reason the refusal must give, which shows it was
	// refused for what the case is about.
	refused := map[string]struct{ token, reason string }{
		"expired":        {mint(t, expired), "token expired"},
		"wrongly signed": {mint(t, wrongSecret), "bad signature"},
		"alg none":       {unsignedToken(t, engineIssuer), "alg none not accepted"},
		"wrong issuer":   {mint(t, wrongIssuer), "wrong issuer"},
		"not a JWT":      {"not-a-jwt", "malformed token"},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			ctx := withBearer(testContext(t), tc.token)
			ack, err := engine.Push(ctx, push.Addr().String(), request("run-auth", "refused-"+name))
			require.NoError(t, err)
			requireRefused(t, ack, ackUnauthenticated)
			assert.Contains(t, ack.GetMessage(), tc.reason, "reason of the refusal")
			assert.NotContains(t, ack.GetMessage(), tc.token, "the refusal quotes the token")
		})
	}
	t.Run("missing", func(t *testing.T) {
		ack := execute(t, engine, push, request("run-auth", "refused-missing"))
		requireRefused(t, ack, ackUnauthenticated)
		assert.Contains(t, ack.GetMessage(), "no authorization metadata", "reason of the refusal")
	})
	t.Run("not a Bearer token", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", "Basic dXNlcjpwYXNz")
		ack, err := engine.Push(ctx, push.Addr().String(), request("run-auth", "refused-basic"))
		require.NoError(t, err)
		requireRefused(t, ack, ackUnauthenticated)
	})
	assert.Zero(t, intake.Attempts(), "offers of refused pushes; %s", intake)

	t.Run("valid", func(t *testing.T) {
		// As per-RPC credentials, the way an engine would attach them.
		creds := newMinter(t, valid).PerRPCCredentials(false)
		requireAccepted(t, execute(t, engine, push, request("run-auth", "accepted"), ggrpc.PerRPCCredentials(creds)))
	})
	require.Len(t, intake.Offers(), 1)
	assert.Equal(t, "accepted", intake.Offers()[0].Task.NodeID)
}

// TestPushInboundTokenOff checks that with Authenticate nil (inbound
// authentication off, as against a Gamelan engine that sends no token) a
// push is accepted without a token.
func TestPushInboundTokenOff(t *testing.T) {
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{Authenticate: nil}, 4)
	requireAccepted(t, execute(t, engine, push, request("run-no-auth", "node-a")))
	require.Len(t, intake.Offers(), 1)
}

// tokenCheckingEngine is an engine that verifies the bearer token of every
// call with verifier and, for the calls made for one executor (register,
// heartbeat, task streams, results), requires the token's subject to be that
// executor's id. It records the subject seen per method.
type tokenCheckingEngine struct {
	*grpctest.Engine
	mu       sync.Mutex
	subjects map[string][]string // by full method name
}

func newTokenCheckingEngine(t *testing.T, verifier *security.Verifier, executorID string) (*tokenCheckingEngine, string) {
	t.Helper()
	e := &tokenCheckingEngine{subjects: make(map[string][]string)}
	perExecutor := map[string]bool{
		gamelanv1.ExecutorService_RegisterExecutor_FullMethodName:   true,
		gamelanv1.ExecutorService_UnregisterExecutor_FullMethodName: true,
		gamelanv1.ExecutorService_Heartbeat_FullMethodName:          true,
		gamelanv1.ExecutorService_StreamTasks_FullMethodName:        true,
		gamelanv1.ExecutorService_ExecuteStream_FullMethodName:      true,
		gamelanv1.ExecutorService_ReportResults_FullMethodName:      true,
	}
	e.Engine = grpctest.NewEngine(grpctest.WithAuth(func(ctx context.Context) error {
		token, ok := grpctest.BearerToken(ctx)
		if !ok {
			return errors.New("no bearer token")
		}
		claims, err := verifier.Verify(token)
		if err != nil {
			return err
		}
		method, _ := ggrpc.Method(ctx)
		e.mu.Lock()
		e.subjects[method] = append(e.subjects[method], claims.Subject)
		e.mu.Unlock()
		if perExecutor[method] && claims.Subject != executorID {
			return fmt.Errorf("%s: token subject %q is not executor %q", method, claims.Subject, executorID)
		}
		return nil
	}))
	return e, e.Start(t)
}

func (e *tokenCheckingEngine) subjectsOf(method string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.subjects[method]...)
}

// TestOutboundToken checks that every call to the engine carries a token
// the engine verifies, whose subject is the executor id for the calls made
// for one executor; and that with the wrong secret every call fails with an
// error wrapping domain.ErrUnauthenticated.
func TestOutboundToken(t *testing.T) {
	secret := securitytest.Secret(t)
	executorMinter := security.MinterConfig{
		Secret: secret, Issuer: executorIssuer, Audience: engineIssuer, Subject: "tax-service",
		Name: "tax-service", Version: "1.0.0", ExecutorTypes: []string{taxExecutorType},
	}
	result := domain.Result{
		TaskID: "task-1", RunID: "run-token", NodeID: "node-a", Attempt: 1, ExecutionToken: "token-a",
		ExecutorID: taxExecutorID, Status: domain.StatusCompleted, Output: map[string]any{"tax": 1.5}, CompletedAt: time.Now(),
	}

	t.Run("right secret", func(t *testing.T) {
		engine, addr := newTokenCheckingEngine(t, newVerifier(t, secret, executorIssuer), taxExecutorID)
		conn := dial(t, ClientConfig{Target: addr, Credentials: newMinter(t, executorMinter).PerRPCCredentials(false)})
		client := gamelanv1.NewExecutorServiceClient(conn)

		require.NoError(t, NewRegistrar(client).Register(testContext(t), taxRegistration()), "Register")
		require.NoError(t, NewHeartbeater(client).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: taxExecutorID, Status: domain.HealthHealthy}), "Heartbeat")
		require.NoError(t, NewResultSink(client, 0).Deliver(testContext(t), []domain.Result{result}), "Deliver")
		require.Len(t, engine.Results(), 1)

		for _, mode := range []string{IntakeStream, IntakeBidi} {
			source, _ := newTestIntake(t, conn, mode, taxRegistration(), fastReconnect)
			startSource(t, source, porttest.NewIntake(4))
		}
		require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 2 }, waitTimeout, time.Millisecond,
			"the StreamTasks and ExecuteStream streams did not open")
		assert.Zero(t, engine.Refused(), "calls the engine refused")

		for _, method := range []string{
			gamelanv1.ExecutorService_RegisterExecutor_FullMethodName,
			gamelanv1.ExecutorService_Heartbeat_FullMethodName,
			gamelanv1.ExecutorService_StreamTasks_FullMethodName,
			gamelanv1.ExecutorService_ExecuteStream_FullMethodName,
			// Results go in one stream per executor id, whose token names
			// that executor.
			gamelanv1.ExecutorService_ReportResults_FullMethodName,
		} {
			subjects := engine.subjectsOf(method)
			require.NotEmpty(t, subjects, "no verified call of %s", method)
			for _, sub := range subjects {
				assert.Equal(t, taxExecutorID, sub, "token subject of %s", method)
			}
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		engine, addr := newTokenCheckingEngine(t, newVerifier(t, secret, executorIssuer), taxExecutorID)
		wrong := executorMinter
		wrong.Secret = securitytest.Secret(t)
		conn := dial(t, ClientConfig{Target: addr, Credentials: newMinter(t, wrong).PerRPCCredentials(false)})
		client := gamelanv1.NewExecutorServiceClient(conn)

		err := NewRegistrar(client).Register(testContext(t), taxRegistration())
		require.ErrorIs(t, err, domain.ErrUnauthenticated, "Register")
		err = NewHeartbeater(client).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: taxExecutorID, Status: domain.HealthHealthy})
		require.ErrorIs(t, err, domain.ErrUnauthenticated, "Heartbeat")
		require.NotErrorIs(t, err, domain.ErrNotRegistered, "Heartbeat: a refused token is not a forgotten executor")
		err = NewResultSink(client, 0).Deliver(testContext(t), []domain.Result{result})
		require.ErrorIs(t, err, domain.ErrUnauthenticated, "Deliver")
		assert.Empty(t, engine.Results(), "results recorded")

		source, _ := newTestIntake(t, conn, IntakeStream, taxRegistration(), fastReconnect)
		startSource(t, source, porttest.NewIntake(4))
		require.Eventually(t, func() bool { return errors.Is(source.Healthy(), domain.ErrUnauthenticated) }, waitTimeout, time.Millisecond,
			"the stream source does not report the refused token")
		assert.GreaterOrEqual(t, engine.Refused(), 4, "calls the engine refused")
		assert.Zero(t, engine.OpenStreams(taxExecutorID), "streams opened with a refused token")
	})
}

// tlsConfig builds a TLS configuration or fails the test.
func tlsConfig(t *testing.T, build func() (*tls.Config, error)) *tls.Config {
	t.Helper()
	cfg, err := build()
	require.NoError(t, err, "TLS configuration")
	return cfg
}

// registerOver registers the tax executor through a new connection to addr.
func registerOver(t *testing.T, addr string, clientTLS *tls.Config) error {
	t.Helper()
	conn := dial(t, ClientConfig{Target: addr, TLS: clientTLS})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Register(ctx, taxRegistration())
}

// TestClientTLS checks the connection to an engine served with TLS: the
// client trusting the engine's CA registers; one trusting another CA, or
// speaking plaintext, does not.
func TestClientTLS(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	serverTLS := tlsConfig(t, func() (*tls.Config, error) {
		return security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
	})
	engine := grpctest.NewEngine(grpctest.WithServerOptions(ggrpc.Creds(credentials.NewTLS(serverTLS))))
	addr := engine.Start(t)

	trusting := tlsConfig(t, func() (*tls.Config, error) { return security.ClientTLSConfig(certs.CAFile, "", "") })
	require.NoError(t, registerOver(t, addr, trusting), "Register over TLS")
	_, registered := engine.Registration(taxExecutorID)
	assert.True(t, registered)

	other := tlsConfig(t, func() (*tls.Config, error) { return security.ClientTLSConfig(certs.OtherCAFile, "", "") })
	require.Error(t, registerOver(t, addr, other), "Register trusting another CA")
	require.Error(t, registerOver(t, addr, nil), "Register in plaintext to a TLS engine")
	assert.Equal(t, 1, engine.RegisterCalls(taxExecutorID), "registrations that reached the engine")
}

// TestClientMutualTLS checks an engine that requires client certificates:
// the client presenting one signed by the engine's CA registers; one
// presenting none does not.
func TestClientMutualTLS(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	serverTLS := tlsConfig(t, func() (*tls.Config, error) {
		return security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile)
	})
	engine := grpctest.NewEngine(grpctest.WithServerOptions(ggrpc.Creds(credentials.NewTLS(serverTLS))))
	addr := engine.Start(t)

	withCert := tlsConfig(t, func() (*tls.Config, error) {
		return security.ClientTLSConfig(certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)
	})
	require.NoError(t, registerOver(t, addr, withCert), "Register with a client certificate")

	withoutCert := tlsConfig(t, func() (*tls.Config, error) { return security.ClientTLSConfig(certs.CAFile, "", "") })
	require.Error(t, registerOver(t, addr, withoutCert), "Register without a client certificate")
	assert.Equal(t, 1, engine.RegisterCalls(taxExecutorID), "registrations that reached the engine")
}

// TestPushServerMutualTLS checks the push server with mutual TLS: the
// engine's push with a client certificate is accepted; without one, or in
// plaintext, it fails and nothing is offered.
func TestPushServerMutualTLS(t *testing.T) {
	certs := securitytest.GenerateCertificates(t)
	serverTLS := tlsConfig(t, func() (*tls.Config, error) {
		return security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile)
	})
	push, intake := startedPushServer(t, ServerConfig{TLS: serverTLS}, 4)
	pushWith := func(clientTLS *tls.Config) (bool, error) {
		t.Helper()
		var opts []grpctest.Option
		if clientTLS != nil {
			opts = append(opts, grpctest.WithPushDialOptions(ggrpc.WithTransportCredentials(credentials.NewTLS(clientTLS))))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		ack, err := pushEngine(t, opts...).Push(ctx, push.Addr().String(), request("run-mtls", fmt.Sprintf("node-%d", intake.Attempts())))
		return ack.GetAccepted(), err
	}

	withCert := tlsConfig(t, func() (*tls.Config, error) {
		return security.ClientTLSConfig(certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)
	})
	accepted, err := pushWith(withCert)
	require.NoError(t, err, "push with a client certificate")
	require.True(t, accepted, "push with a client certificate")

	withoutCert := tlsConfig(t, func() (*tls.Config, error) { return security.ClientTLSConfig(certs.CAFile, "", "") })
	_, err = pushWith(withoutCert)
	require.Error(t, err, "push without a client certificate")
	_, err = pushWith(nil)
	require.Error(t, err, "push in plaintext")
	assert.Equal(t, 1, intake.Attempts(), "offers; %s", intake)
}
