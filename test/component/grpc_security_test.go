package component

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// engineIssuer is the issuer of the engine's tokens that the service
// accepts by default (JWT_INBOUND_ISSUER); executorIssuer is the issuer of
// the service's own tokens (JWT_ISSUER).
const engineIssuer, executorIssuer = "gamelan-engine", "gamelan-executor"

// printableSecret returns a fresh 64-character JWT secret that can be put in
// an environment variable and searched for in output.
func printableSecret(t *testing.T) string {
	t.Helper()
	return hex.EncodeToString(securitytest.Secret(t))
}

// engineMinterConfig is how an engine signs the tokens it sends on push.
func engineMinterConfig(secret string) security.MinterConfig {
	return security.MinterConfig{
		Secret: []byte(secret), Issuer: engineIssuer, Audience: "gamelan-executor",
		TTL: 5 * time.Minute, Subject: "gamelan-engine",
	}
}

// engineToken mints a token from cfg.
func engineToken(t *testing.T, cfg security.MinterConfig) string {
	t.Helper()
	minter, err := security.NewMinter(cfg)
	require.NoError(t, err)
	token, err := minter.Token("")
	require.NoError(t, err)
	return token
}

// unsignedToken is token's claims under an "alg: none" header with an empty
// signature.
func unsignedToken(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	require.Len(t, parts, 3)
	header, err := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(header) + "." + parts[1] + "."
}

// withBearer returns ctx carrying "authorization: Bearer token" to the call.
func withBearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestGRPCInboundJWT sets JWT_SECRET: push calls whose token is missing,
// expired, signed with another secret, unsigned (alg none), malformed or
// issued by someone else are acknowledged 401 and never run; a token the
// engine signs with the shared secret and its issuer is accepted and
// answered.
func TestGRPCInboundJWT(t *testing.T) {
	secret := printableSecret(t)
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()

	valid := engineMinterConfig(secret)
	expired := valid
	expired.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	otherSecret := valid
	otherSecret.Secret = securitytest.Secret(t)
	wrongIssuer := valid
	wrongIssuer.Issuer = "someone-else"
	executorsOwn := valid
	executorsOwn.Issuer = executorIssuer // a token like the executor's own, replayed at it
	// Issue 10, failure 6: a token signed with the shared secret for another
	// service is not for this executor.
	otherAudience := valid
	otherAudience.Audience = "some-other-service"

	refused := map[string]string{
		"no token":           "",
		"expired":            engineToken(t, expired),
		"other secret":       engineToken(t, otherSecret),
		"alg none":           unsignedToken(t, engineToken(t, valid)),
		"wrong issuer":       engineToken(t, wrongIssuer),
		"executor's issuer":  engineToken(t, executorsOwn),
		"another audience":   engineToken(t, otherAudience),
		"not a token at all": "not-a-jwt",
	}
	const run = "run-jwt"
	for name, token := range refused {
		ctx := deadline(t, conditionTimeout)
		if token != "" {
			ctx = withBearer(ctx, token)
		}
		ack, err := engine.Push(ctx, endpoint, taxPush(run, "refused-"+strings.ReplaceAll(name, " ", "-"), "10"))
		require.NoError(t, err, name)
		assert.False(t, ack.GetAccepted(), "%s: %v", name, ack)
		assert.EqualValues(t, 401, ack.GetCode(), "%s: %v", name, ack)
		if token != "" {
			assert.NotContains(t, ack.GetMessage(), token, "%s: the refusal echoes the token", name)
		}
	}

	ack, err := engine.Push(withBearer(deadline(t, conditionTimeout), engineToken(t, valid)), endpoint, taxPush(run, "valid", "42"))
	require.NoError(t, err)
	require.True(t, ack.GetAccepted(), "valid token: %v", ack)
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	checkTaxResult(t, engine.UniqueResults()[resultKey(run, "valid")], run, "valid", "42")
	assert.Len(t, engine.Results(), 1, "a refused push ran: %v", engine.Results())
	assert.Equal(t, map[string]bool{"valid": true}, finishedNodes(r.logs, run), "only the authenticated task ran")

	require.NoError(t, r.stop(t))
	assert.NotContains(t, r.logs.text(), secret, "the secret is logged")
}

// TestGRPCInboundJWTOff sets JWT_SECRET with JWT_INBOUND=off, for engines
// that send no token on push (Gamelan today): a push without a token is
// accepted and answered, and the start-up log says so loudly.
func TestGRPCInboundJWTOff(t *testing.T) {
	secret := printableSecret(t)
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	vars["GAMELAN_EXECUTOR_JWT_INBOUND"] = "off"
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()

	ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-open", "n1", "7"))
	require.NoError(t, err)
	require.True(t, ack.GetAccepted(), "%v", ack)
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	checkTaxResult(t, engine.UniqueResults()[resultKey("run-open", "n1")], "run-open", "n1", "7")

	warning := logLineContaining(t, r.logs, "INBOUND AUTHENTICATION IS OFF")
	assert.Equal(t, "WARN", warning["level"])
	assert.Contains(t, warning["msg"], "GAMELAN_EXECUTOR_JWT_INBOUND=off")
	require.NoError(t, r.stop(t))
	assert.NotContains(t, r.logs.text(), secret, "the secret is logged")
}

// logLineContaining returns the first log line whose msg contains text.
func logLineContaining(t *testing.T, l *logLines, text string) map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if msg, ok := line["msg"].(string); ok && strings.Contains(msg, text) {
			return line
		}
	}
	t.Fatalf("no log line containing %q; got:\n%s", text, strings.Join(l.raw, ""))
	return nil
}

// subjectLog records the sub claim of each authenticated call, by method.
type subjectLog struct {
	mu       sync.Mutex
	subjects map[string]map[string]bool // method -> subjects
}

func (s *subjectLog) add(method, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subjects == nil {
		s.subjects = make(map[string]map[string]bool)
	}
	if s.subjects[method] == nil {
		s.subjects[method] = make(map[string]bool)
	}
	s.subjects[method][subject] = true
}

func (s *subjectLog) of(method string) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool)
	for subject := range s.subjects[method] {
		out[subject] = true
	}
	return out
}

// verifyingEngine returns an engine that verifies every call's token with
// secret and the executor's issuer and audience, recording subjects.
func verifyingEngine(t *testing.T, secret string, subjects *subjectLog) *grpctest.Engine {
	t.Helper()
	verifier, err := security.NewVerifier(security.VerifierConfig{
		Secret: []byte(secret), Issuer: executorIssuer, Audience: "gamelan-engine",
	})
	require.NoError(t, err)
	return grpctest.NewEngine(grpctest.WithAuth(func(ctx context.Context) error {
		token, ok := grpctest.BearerToken(ctx)
		if !ok {
			return errors.New("no bearer token")
		}
		claims, err := verifier.Verify(token)
		if err != nil {
			return err
		}
		method, _ := grpc.Method(ctx)
		subjects.add(method, claims.Subject)
		return nil
	}))
}

// TestGRPCOutboundJWT runs the service against an engine that verifies the
// service's tokens (issuer gamelan-executor, audience gamelan-engine): it
// registers, becomes ready, and its results are accepted, through push and
// through a StreamTasks stream; every call it made carried a valid token.
func TestGRPCOutboundJWT(t *testing.T) {
	for _, intake := range []string{"push", "stream"} {
		t.Run(intake, func(t *testing.T) {
			secret := printableSecret(t)
			var subjects subjectLog
			engine := verifyingEngine(t, secret, &subjects)
			addr := engine.Start(t)
			vars := serviceEnv(addr, intake)
			vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
			r := startService(t, vars)
			endpoint := waitForRegistration(t, engine, taxExecutorID).GetEndpoint()

			const run = "run-outbound"
			if intake == "push" {
				waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
				ctx := withBearer(deadline(t, conditionTimeout), engineToken(t, engineMinterConfig(secret)))
				ack, err := engine.Push(ctx, endpoint, taxPush(run, "n1", "99"))
				require.NoError(t, err)
				require.True(t, ack.GetAccepted(), "%v", ack)
			} else {
				engine.Enqueue(taxExecutorID, taxTask(t, run, "n1", "99"))
			}
			waitForUniqueResults(t, engine, 1, conditionTimeout)
			checkTaxResult(t, engine.UniqueResults()[resultKey(run, "n1")], run, "n1", "99")
			waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
			assert.Zero(t, engine.Refused(), "the engine refused some of the service's calls")

			// docs/protocol.md, section 6: sub is the executor id (ReportResults: see
			// TestGRPCReportResultsTokenNamesTheExecutor).
			assert.Equal(t, map[string]bool{taxExecutorID: true}, subjects.of(gamelanv1.ExecutorService_RegisterExecutor_FullMethodName))
			if intake == "stream" {
				assert.Equal(t, map[string]bool{taxExecutorID: true}, subjects.of(gamelanv1.ExecutorService_StreamTasks_FullMethodName))
			}
			assert.NotEmpty(t, subjects.of(gamelanv1.ExecutorService_ReportResults_FullMethodName), "results went without a verified token")

			require.NoError(t, r.stop(t))
			assert.Equal(t, map[string]bool{taxExecutorID: true}, subjects.of(gamelanv1.ExecutorService_UnregisterExecutor_FullMethodName))
			assert.Contains(t, engine.Unregistered(), taxExecutorID)
			assert.NotContains(t, r.logs.text(), secret, "the secret is logged")
		})
	}
}

// TestGRPCReportResultsTokenNamesTheExecutor checks docs/protocol.md, section 6
// on the result path: the token on every call the executor makes carries
// its executor id as sub, so an engine can tell whose results a
// ReportResults call brings.
func TestGRPCReportResultsTokenNamesTheExecutor(t *testing.T) {
	secret := printableSecret(t)
	var subjects subjectLog
	engine := verifyingEngine(t, secret, &subjects)
	addr := engine.Start(t)
	vars := serviceEnv(addr, "stream")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	r := startService(t, vars)
	waitForRegistration(t, engine, taxExecutorID)
	engine.Enqueue(taxExecutorID, taxTask(t, "run-sub", "n1", "3"))
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	assert.Equal(t, map[string]bool{taxExecutorID: true}, subjects.of(gamelanv1.ExecutorService_ReportResults_FullMethodName),
		"sub of the ReportResults tokens")
	require.NoError(t, r.stop(t))
}

// TestGRPCOutboundJWTWrongSecret runs the service against an engine that
// expects tokens signed with another secret: every call is refused, the
// service never registers and so never becomes ready, and its readiness
// probe says why, without showing the secret.
func TestGRPCOutboundJWTWrongSecret(t *testing.T) {
	secret := printableSecret(t)
	var subjects subjectLog
	engine := verifyingEngine(t, printableSecret(t), &subjects)
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	r := startService(t, vars)

	// Registration is retried with backoff; wait for a few refusals.
	require.Eventually(t, func() bool { return engine.Refused() >= 3 }, conditionTimeout, conditionTick)
	_, registered := engine.Registration(taxExecutorID)
	assert.False(t, registered)
	assert.Zero(t, engine.RegisterCalls(taxExecutorID), "a refused call reached the engine")

	code, body := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "DOWN", body.Status)
	var reason string
	for _, check := range body.Checks {
		if check.Name == "executor" {
			reason, _ = check.Data["error"].(string)
		}
	}
	t.Logf("readiness says: %q", reason)
	assert.Contains(t, reason, taxExecutorID, "readiness does not say which executor is not registered")
	assert.Contains(t, strings.ToLower(reason), "regist", "readiness does not say that registration is failing")
	failure := r.logs.waitFor(t, "registration failed")
	assert.Contains(t, failure["error"], "Unauthenticated", "the log names the refusal")
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), secret)

	require.NoError(t, r.stop(t))
	assert.NotContains(t, r.logs.text(), secret, "the secret is logged")
}

// tlsFiles names the PEM files of one side of a TLS connection.
type tlsFiles struct {
	caFile, certFile, keyFile string
	// clientCertFile and clientKeyFile, when set, are the certificate the
	// service presents as a client; else it presents certFile.
	clientCertFile, clientKeyFile string
}

// tlsEngine returns an engine serving TLS with server's certificate that
// requires client certificates chaining to server's CA (mutual TLS), and
// that pushes over TLS presenting client's certificate.
func tlsEngine(t *testing.T, server, client tlsFiles) *grpctest.Engine {
	t.Helper()
	serverTLS, err := security.ServerTLSConfig(server.certFile, server.keyFile, server.caFile)
	require.NoError(t, err)
	require.Equal(t, tls.RequireAndVerifyClientCert, serverTLS.ClientAuth)
	clientTLS, err := security.ClientTLSConfig(client.caFile, client.certFile, client.keyFile)
	require.NoError(t, err)
	return grpctest.NewEngine(
		grpctest.WithServerOptions(grpc.Creds(credentials.NewTLS(serverTLS))),
		grpctest.WithPushDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(clientTLS))),
	)
}

// TestGRPCMutualTLS runs the service with GRPC_USE_SSL against an engine
// requiring mutual TLS. The service's one certificate and key
// (GRPC_CERTIFICATE_PATH, GRPC_PRIVATE_KEY_PATH) serve as both its server
// certificate (push) and its client certificate (calls to the engine). It
// must register, answer a push over TLS with a client certificate, and
// refuse a plaintext push.
//
// "securitytest server certificate" is the set-up of issue 3: the server
// certificate of securitytest.GenerateCertificates, whose extended key usage
// is serverAuth only. "dual-purpose certificate" uses a certificate made
// here with serverAuth and clientAuth, from a CA made here.
func TestGRPCMutualTLS(t *testing.T) {
	t.Run("separate server and client certificates", func(t *testing.T) {
		certs := securitytest.GenerateCertificates(t)
		service := tlsFiles{caFile: certs.CAFile, certFile: certs.ServerCertFile, keyFile: certs.ServerKeyFile,
			clientCertFile: certs.ClientCertFile, clientKeyFile: certs.ClientKeyFile}
		engineClient := tlsFiles{caFile: certs.CAFile, certFile: certs.ClientCertFile, keyFile: certs.ClientKeyFile}
		checkMutualTLS(t, service, service, engineClient)
	})
	t.Run("dual-purpose certificate", func(t *testing.T) {
		dual := dualPurposeCertificate(t)
		checkMutualTLS(t, dual, dual, dual)
	})
}

// checkMutualTLS runs the service with service's files against an engine
// serving with engineServer's and pushing with engineClient's.
func checkMutualTLS(t *testing.T, service, engineServer, engineClient tlsFiles) {
	engine := tlsEngine(t, engineServer, engineClient)
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_GRPC_USE_SSL"] = "true"
	vars["GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH"] = service.certFile
	vars["GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH"] = service.keyFile
	vars["GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH"] = service.caFile
	vars["GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH"] = service.clientCertFile
	vars["GAMELAN_EXECUTOR_GRPC_CLIENT_PRIVATE_KEY_PATH"] = service.clientKeyFile
	r := startService(t, vars)
	listening := r.logs.waitFor(t, "push server listening")
	assert.Equal(t, true, listening["tls"])
	endpoint := listening["addr"].(string)

	// The push server refuses plaintext whatever the registration does.
	plaintext := grpctest.NewEngine()
	t.Cleanup(plaintext.Close)
	_, err := plaintext.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-tls", "plain", "1"))
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	// So does it refuse TLS without a client certificate.
	anonymousTLS, err := security.ClientTLSConfig(engineClient.caFile, "", "")
	require.NoError(t, err)
	anonymous := grpctest.NewEngine(grpctest.WithPushDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(anonymousTLS))))
	t.Cleanup(anonymous.Close)
	_, err = anonymous.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-tls", "anonymous", "1"))
	require.Error(t, err, "a push without a client certificate was answered")

	// TLS with a client certificate is answered (refused as malformed: the
	// probe must not run), before and whatever the registration does.
	ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, &dispatcherpb.ExecutionRequest{})
	require.NoError(t, err, "a push over TLS with a client certificate failed")
	assert.False(t, ack.GetAccepted())

	reg, ok := waitForRegistrationOrLog(t, engine, r)
	require.True(t, ok, "the service never registered over mutual TLS")
	assert.Equal(t, endpoint, reg.GetEndpoint())
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)

	ack, err = engine.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-tls", "n1", "20"))
	require.NoError(t, err)
	require.True(t, ack.GetAccepted(), "%v", ack)
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	checkTaxResult(t, engine.UniqueResults()[resultKey("run-tls", "n1")], "run-tls", "n1", "20")
	assert.Len(t, engine.Results(), 1, "a refused push ran")
	require.NoError(t, r.stop(t))
}

// dualPurposeCertificate writes into t.TempDir() a fresh CA and a
// certificate it signed for 127.0.0.1 and localhost that is valid for both
// server and client authentication, with its key.
func dualPurposeCertificate(t *testing.T) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "component test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)

	files := tlsFiles{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "dual.pem"),
		keyFile:  filepath.Join(dir, "dual-key.pem"),
	}
	for file, block := range map[string]*pem.Block{
		files.caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		files.certFile: {Type: "CERTIFICATE", Bytes: der},
		files.keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		require.NoError(t, os.WriteFile(file, pem.EncodeToMemory(block), 0o600))
	}
	return files
}

// waitForRegistrationOrLog waits until the service registers with engine; if
// it never does, it logs the service's reasons and reports false.
func waitForRegistrationOrLog(t *testing.T, engine *grpctest.Engine, r *running) (*gamelanv1.RegisterExecutorRequest, bool) {
	t.Helper()
	registered := func() bool { _, ok := engine.Registration(taxExecutorID); return ok }
	if !assert.Eventually(t, registered, conditionTimeout/2, conditionTick) {
		r.logs.mu.Lock()
		defer r.logs.mu.Unlock()
		for _, line := range r.logs.lines {
			if line["msg"] == "registration failed" {
				t.Logf("registration failed: %v", line["error"])
				break
			}
		}
		return nil, false
	}
	reg, _ := engine.Registration(taxExecutorID)
	return reg, true
}
