package component

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/test/testkit"
)

// The mutual TLS attacks of issue 14: certificates an attacker may present
// to the service's push server, and an engine the service must not trust.
// Every certificate is made here, short-lived, in the test's temporary
// directory.

// attackCA is a certificate authority made for one test.
type attackCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// file holds the CA's certificate as PEM.
	file string
	dir  string
}

// attackLeaf names the PEM files of a certificate and its private key.
type attackLeaf struct {
	certFile, keyFile string
}

// attackKey returns a fresh ECDSA P-256 key.
func attackKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return key
}

// attackSerial returns a random 128-bit serial number.
func attackSerial(t *testing.T) *big.Int {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	require.NoError(t, err)
	return serial
}

// attackWritePEM writes one PEM block to file, readable by the owner only.
func attackWritePEM(t *testing.T, file, blockType string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600))
}

// attackNewCA makes a self-signed CA valid for the next few minutes and
// writes its certificate into a fresh temporary directory.
func attackNewCA(t *testing.T, name string) *attackCA {
	t.Helper()
	key := attackKey(t)
	template := &x509.Certificate{
		SerialNumber: attackSerial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(15 * time.Minute),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	dir := t.TempDir()
	ca := &attackCA{cert: cert, key: key, file: filepath.Join(dir, "ca.pem"), dir: dir}
	attackWritePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs a certificate named name for localhost and 127.0.0.1, valid
// from notBefore to notAfter for the given extended key usages, and writes
// it with its PKCS #8 key.
func (ca *attackCA) issue(t *testing.T, name string, notBefore, notAfter time.Time, usages ...x509.ExtKeyUsage) attackLeaf {
	t.Helper()
	key := attackKey(t)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: attackSerial(t), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
	}, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	leaf := attackLeaf{certFile: filepath.Join(ca.dir, name+".pem"), keyFile: filepath.Join(ca.dir, name+"-key.pem")}
	attackWritePEM(t, leaf.certFile, "CERTIFICATE", der)
	attackWritePEM(t, leaf.keyFile, "PRIVATE KEY", keyDER)
	return leaf
}

// issueValid issues a certificate valid from a minute ago for ten minutes.
func (ca *attackCA) issueValid(t *testing.T, name string, usages ...x509.ExtKeyUsage) attackLeaf {
	t.Helper()
	return ca.issue(t, name, time.Now().Add(-time.Minute), time.Now().Add(10*time.Minute), usages...)
}

// issueExpired issues a certificate that expired an hour ago.
func (ca *attackCA) issueExpired(t *testing.T, name string, usages ...x509.ExtKeyUsage) attackLeaf {
	t.Helper()
	return ca.issue(t, name, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour), usages...)
}

// attackServerUsage and attackClientUsage are the extended key usages of
// server and client certificates.
var (
	attackServerUsage = x509.ExtKeyUsageServerAuth
	attackClientUsage = x509.ExtKeyUsageClientAuth
)

// attackTLSEngine returns an engine serving TLS with server's certificate,
// requiring client certificates chaining to clientCAFile, and pushing with
// push's certificate while trusting pushCAFile.
func attackTLSEngine(t *testing.T, server attackLeaf, clientCAFile string, push attackLeaf, pushCAFile string) *grpctest.Engine {
	t.Helper()
	serverTLS, err := security.ServerTLSConfig(server.certFile, server.keyFile, clientCAFile)
	require.NoError(t, err)
	return grpctest.NewEngine(
		grpctest.WithServerOptions(grpc.Creds(credentials.NewTLS(serverTLS))),
		attackPushWith(t, push, pushCAFile),
	)
}

// attackPushWith is the engine option that makes pushes go over TLS
// presenting client's certificate (none when its files are empty) and
// trusting caFile.
func attackPushWith(t *testing.T, client attackLeaf, caFile string) grpctest.Option {
	t.Helper()
	clientTLS, err := security.ClientTLSConfig(caFile, client.certFile, client.keyFile)
	require.NoError(t, err)
	return grpctest.WithPushDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
}

// attackPushPresenting is attackPushWith for an attacker: the client
// presents its certificate whatever CAs the server says it accepts. (A Go
// client left to itself sends no certificate the server's CAs did not
// sign, which would test a missing certificate instead.)
func attackPushPresenting(t *testing.T, client attackLeaf, caFile string) grpctest.Option {
	t.Helper()
	clientTLS, err := security.ClientTLSConfig(caFile, client.certFile, client.keyFile)
	require.NoError(t, err)
	require.Len(t, clientTLS.Certificates, 1)
	certificate := clientTLS.Certificates[0]
	clientTLS.Certificates = nil
	clientTLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certificate, nil }
	return grpctest.WithPushDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
}

// attackTLSEnv configures the service with GRPC_USE_SSL: it serves push
// with server's certificate, demands client certificates chaining to
// caFile, trusts only caFile for the engine, and presents client's
// certificate to it.
func attackTLSEnv(engineAddr string, server, client attackLeaf, caFile string) map[string]string {
	vars := serviceEnv(engineAddr, "push")
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	vars["GAMELAN_EXECUTOR_GRPC_USE_SSL"] = "true"
	vars["GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH"] = server.certFile
	vars["GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH"] = server.keyFile
	vars["GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH"] = caFile
	vars["GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH"] = client.certFile
	vars["GAMELAN_EXECUTOR_GRPC_CLIENT_PRIVATE_KEY_PATH"] = client.keyFile
	return vars
}

// TestAttackMutualTLSClientCertificates pushes to the service's mutual TLS
// push server with client certificates it must refuse: one from a CA it
// does not know, one from its CA that expired, and one from its CA made for
// server authentication only. Each connection fails, no handler runs (no
// "task finished" line, no result), and a push with a valid client
// certificate, presented the same way, is accepted and answered.
func TestAttackMutualTLSClientCertificates(t *testing.T) {
	t.Parallel()
	ca := attackNewCA(t, "attack CA")
	unknown := attackNewCA(t, "attacker's CA")
	serviceServer := ca.issueValid(t, "service", attackServerUsage)
	serviceClient := ca.issueValid(t, "service-client", attackClientUsage)
	engineServer := ca.issueValid(t, "engine", attackServerUsage)
	engineClient := ca.issueValid(t, "engine-client", attackClientUsage)

	engine := attackTLSEngine(t, engineServer, ca.file, engineClient, ca.file)
	addr := engine.Start(t)
	r := startService(t, attackTLSEnv(addr, serviceServer, serviceClient, ca.file))
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()

	attackers := []struct {
		name   string
		client attackLeaf
	}{
		{"client certificate from an unknown CA", unknown.issueValid(t, "intruder", attackClientUsage)},
		{"expired client certificate from the right CA", ca.issueExpired(t, "expired-client", attackClientUsage)},
		{"server-only certificate from the right CA", ca.issueValid(t, "server-only", attackServerUsage)},
	}
	const run = "run-attack-mtls"
	outcome := &testkit.Outcome{Scenario: "mutual TLS: refused client certificates"}
	for i, a := range attackers {
		pusher := grpctest.NewEngine(attackPushPresenting(t, a.client, ca.file))
		t.Cleanup(pusher.Close)
		ack, err := pusher.Push(deadline(t, conditionTimeout), endpoint, taxPush(run, fmt.Sprintf("refused-%d", i), "5"))
		assert.Error(t, err, "%s: the push was answered: %v", a.name, ack)
		if err != nil {
			t.Logf("%s: %v", a.name, err)
		}
	}

	// The control: the same forced presentation with a valid certificate
	// goes through, so the refusals above are the certificates'.
	control := grpctest.NewEngine(attackPushPresenting(t, engineClient, ca.file))
	t.Cleanup(control.Close)
	ack, err := control.Push(deadline(t, conditionTimeout), endpoint, taxPush(run, "valid", "5"))
	require.NoError(t, err, "the valid client certificate after the attacks")
	require.True(t, ack.GetAccepted(), "%v", ack)
	outcome.Submitted(resultKey(run, "valid"))
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	checkTaxResult(t, engine.UniqueResults()[resultKey(run, "valid")], run, "valid", "5")
	require.Eventually(t, func() bool { return finishedNodes(r.logs, run)["valid"] }, conditionTimeout, conditionTick)
	assert.Equal(t, map[string]bool{"valid": true}, finishedNodes(r.logs, run), "a refused connection's task ran")
	require.NoError(t, r.stop(t))
	for _, res := range engine.Results() {
		outcome.Answer(res.GetRunId() + ":" + res.GetNodeId() + ":" + fmt.Sprint(res.GetAttempt()))
	}
	outcome.Notes = map[string]any{"refusedCertificates": len(attackers)}
	outcome.Check(t)
}

// TestAttackMutualTLSUntrustedEngine runs the service against engines it
// must not trust: one presenting a certificate from another CA, one
// presenting an expired certificate from the right CA. The service keeps
// failing to register, says why (a certificate error) in its log and its
// readiness, never becomes ready, and no call reaches the engine's
// handlers.
func TestAttackMutualTLSUntrustedEngine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		server func(ca, other *attackCA) attackLeaf
	}{
		{"engine certificate from another CA", func(_, other *attackCA) attackLeaf {
			return other.issueValid(t, "impostor-engine", attackServerUsage)
		}},
		{"expired engine certificate from the right CA", func(ca, _ *attackCA) attackLeaf {
			return ca.issueExpired(t, "expired-engine", attackServerUsage)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := attackNewCA(t, "attack CA")
			other := attackNewCA(t, "impostor's CA")
			serviceServer := ca.issueValid(t, "service", attackServerUsage)
			serviceClient := ca.issueValid(t, "service-client", attackClientUsage)
			// The engine would accept the service's client certificate: only
			// its own certificate is wrong.
			engine := attackTLSEngine(t, tc.server(ca, other), ca.file, attackLeaf{}, ca.file)
			addr := engine.Start(t)
			r := startService(t, attackTLSEnv(addr, serviceServer, serviceClient, ca.file))

			failure := waitForLogWhere(t, r.logs, "a failed registration", func(line map[string]any) bool {
				return line["msg"] == "registration failed"
			})
			reason := fmt.Sprint(failure["error"])
			t.Logf("registration failed: %s", reason)
			assert.Contains(t, reason, "certificate", "the failure does not name the certificate")
			code, why := readinessReason(t, r.baseURL)
			assert.Equal(t, http.StatusServiceUnavailable, code, "ready against an untrusted engine: %s", why)
			assert.Zero(t, engine.RegisterCalls(taxExecutorID), "a call reached the untrusted engine's handler")
			assert.Empty(t, engine.Registrations())
			require.NoError(t, r.stop(t))
			assert.Empty(t, engine.Unregistered(), "a call reached the untrusted engine's handler")
			assert.False(t, strings.Contains(r.logs.text(), `"msg":"registered"`), "the service says it registered")
		})
	}
}
