package component

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
	"github.com/gamelan-go/executor/test/testkit"
)

// The secret-leak hunt of issue 14: the service runs at debug level with a
// JWT secret, TLS key files and a Kafka SASL password, is driven through
// failures, and everything it produced is searched for each secret, plain
// and encoded.

// attackNeedles are the strings that must appear nowhere: each secret in
// every encoding it might be printed in.
type attackNeedles struct {
	names  []string
	values []string
}

// add adds secret as is, in base64 (standard and URL alphabets, with and
// without padding) and in hex (both cases).
func (n *attackNeedles) add(name string, secret []byte) {
	n.addPlain(name, string(secret))
	n.addPlain(name+" (base64)", base64.StdEncoding.EncodeToString(secret))
	n.addPlain(name+" (base64, unpadded)", base64.RawStdEncoding.EncodeToString(secret))
	n.addPlain(name+" (base64url)", base64.URLEncoding.EncodeToString(secret))
	n.addPlain(name+" (base64url, unpadded)", base64.RawURLEncoding.EncodeToString(secret))
	n.addPlain(name+" (hex)", hex.EncodeToString(secret))
	n.addPlain(name+" (HEX)", strings.ToUpper(hex.EncodeToString(secret)))
}

// addPlain adds one needle as is. Needles shorter than 12 characters could
// match by chance and are refused.
func (n *attackNeedles) addPlain(name, value string) {
	if len(value) < 12 {
		panic(fmt.Sprintf("needle %s is too short to search for", name))
	}
	n.names = append(n.names, name)
	n.values = append(n.values, value)
}

// addKeyFile adds a PEM private key file: its text, each line of its PEM
// body, its DER and its private scalar, the last two in every encoding.
func (n *attackNeedles) addKeyFile(t *testing.T, name, file string) {
	t.Helper()
	contents, err := os.ReadFile(file)
	require.NoError(t, err)
	n.addPlain(name+" (PEM)", strings.TrimSpace(string(contents)))
	for i, line := range strings.Split(string(contents), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			n.addPlain(fmt.Sprintf("%s (PEM line %d)", name, i), line)
		}
	}
	block, _ := pem.Decode(contents)
	require.NotNil(t, block, "%s holds no PEM block", file)
	n.add(name+" (DER)", block.Bytes)
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	key, ok := parsed.(*ecdsa.PrivateKey)
	require.True(t, ok, "%s: not an ECDSA key", file)
	n.add(name+" (private scalar)", key.D.FillBytes(make([]byte, 32)))
}

// find returns the names of the needles text contains.
func (n *attackNeedles) find(text string) []string {
	var found []string
	for i, value := range n.values {
		if strings.Contains(text, value) {
			found = append(found, n.names[i])
		}
	}
	return found
}

// check fails t for every needle found in text, which came from where.
func (n *attackNeedles) check(t *testing.T, where, text string) {
	t.Helper()
	for _, name := range n.find(text) {
		t.Errorf("%s leaks the %s", where, name)
	}
}

// requireFinds shows that the search works: each secret, planted in some
// text in one of its encodings, is found.
func (n *attackNeedles) requireFinds(t *testing.T, secrets ...[]byte) {
	t.Helper()
	for _, secret := range secrets {
		for _, planted := range []string{string(secret), base64.RawURLEncoding.EncodeToString(secret), hex.EncodeToString(secret)} {
			require.NotEmpty(t, n.find(`{"msg":"oops","value":"`+planted+`"}`), "a planted secret is not found")
		}
	}
}

// attackOutputs collects everything the service produced, by origin.
type attackOutputs struct {
	mu      sync.Mutex
	origins []string
	texts   []string
}

func (o *attackOutputs) add(origin, text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.origins = append(o.origins, origin)
	o.texts = append(o.texts, text)
}

// probeAll fetches every probe and the metrics of the service at baseURL.
func (o *attackOutputs) probeAll(t *testing.T, when, baseURL string) {
	t.Helper()
	for _, path := range []string{"/q/health", "/q/health/live", "/q/health/ready", "/q/health/started", "/q/metrics"} {
		resp, err := http.Get(baseURL + path)
		require.NoError(t, err, path)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err, path)
		o.add(fmt.Sprintf("%s %s (%d)", when, path, resp.StatusCode), string(body))
	}
}

func (o *attackOutputs) check(t *testing.T, needles *attackNeedles) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	total := 0
	for i, text := range o.texts {
		needles.check(t, o.origins[i], text)
		total += len(text)
	}
	t.Logf("searched %d outputs (%d bytes) for %d needles", len(o.texts), total, len(needles.values))
}

// attackEngineGate is a gRPC engine's check of the service's calls: it
// refuses every call while refuse is set, verifies each token otherwise,
// and records the tokens it saw (credentials the service must not print).
type attackEngineGate struct {
	refuse   atomic.Bool
	refused  atomic.Int64
	verifier *security.Verifier

	mu     sync.Mutex
	tokens map[string]bool
}

func (g *attackEngineGate) check(ctx context.Context) error {
	token, ok := grpctest.BearerToken(ctx)
	if ok {
		g.mu.Lock()
		if len(g.tokens) < 64 {
			g.tokens[token] = true
		}
		g.mu.Unlock()
	}
	if g.refuse.Load() {
		g.refused.Add(1)
		return errors.New("the engine refuses calls for now")
	}
	if !ok {
		return errors.New("no bearer token")
	}
	_, err := g.verifier.Verify(token)
	return err
}

func (g *attackEngineGate) seenTokens() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Collect(maps.Keys(g.tokens))
}

// attackCapturing runs the service with vars like startService, and
// returns its stderr too.
func attackCapturing(t *testing.T, vars map[string]string) (*running, *testkit.SyncBuffer) {
	t.Helper()
	var stderr testkit.SyncBuffer
	vars = maps.Clone(vars)
	r := start(t, nil, func(ctx context.Context, stdout, _ io.Writer) error {
		return runFixtures(ctx, nil, vars, stdout, &stderr)
	})
	return r, &stderr
}

// attackRandomText returns n random printable characters.
func attackRandomText(t *testing.T, n int) string {
	t.Helper()
	raw := make([]byte, n)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(raw)[:n]
}

// TestAttackSecretsNeverLeakWhileRunning runs the service with a JWT
// secret, mutual TLS key files (server and client) and a Kafka SASL
// password, at debug level, and drives it through failures: the engine
// refuses its calls (registration, then results, retried), pushes come
// with refused tokens (one a Basic credential built from the secret), a
// handler fails on bad input, and a Kafka task goes through the
// SASL-authenticated broker. Every log line, its stderr, the error Run
// returns, every ack and result, and every probe and the metrics (while
// failing and after) are searched for each secret in every encoding, and
// for the tokens the service sent. The start-up configuration dump shows
// both secret variables as [redacted].
func TestAttackSecretsNeverLeakWhileRunning(t *testing.T) {
	t.Parallel()
	secret := printableSecret(t)
	saslPassword := "sasl-" + attackRandomText(t, 24)
	const saslUser = "executor"

	ca := attackNewCA(t, "attack CA")
	serviceServer := ca.issueValid(t, "service", attackServerUsage)
	serviceClient := ca.issueValid(t, "service-client", attackClientUsage)
	engineServer := ca.issueValid(t, "engine", attackServerUsage)
	engineClient := ca.issueValid(t, "engine-client", attackClientUsage)

	var needles attackNeedles
	needles.add("JWT secret", []byte(secret))
	needles.add("SASL password", []byte(saslPassword))
	needles.addKeyFile(t, "server private key", serviceServer.keyFile)
	needles.addKeyFile(t, "client private key", serviceClient.keyFile)
	needles.requireFinds(t, []byte(secret), []byte(saslPassword))

	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: []byte(secret), Issuer: executorIssuer, Audience: "gamelan-engine"})
	require.NoError(t, err)
	gate := &attackEngineGate{verifier: verifier, tokens: map[string]bool{}}
	gate.refuse.Store(true)
	serverTLS, err := security.ServerTLSConfig(engineServer.certFile, engineServer.keyFile, ca.file)
	require.NoError(t, err)
	engine := grpctest.NewEngine(
		grpctest.WithServerOptions(grpc.Creds(credentials.NewTLS(serverTLS))),
		grpctest.WithAuth(gate.check),
		attackPushWith(t, engineClient, ca.file),
	)
	addr := engine.Start(t)
	broker := kafkatest.Start(t, kafkatest.WithSASL(kafkatest.SASLPlain, saslUser, saslPassword))
	kafkaResults := broker.Results(t)

	vars := attackTLSEnv(addr, serviceServer, serviceClient, ca.file)
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax,notification-sender"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "notification-sender=kafka"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	vars["GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM"] = kafkatest.SASLPlain
	vars["GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME"] = saslUser
	vars["GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD"] = saslPassword
	r, stderr := attackCapturing(t, vars)
	var outputs attackOutputs

	// The engine refuses the service's calls: registration fails, retried.
	require.Eventually(t, func() bool { return gate.refused.Load() >= 2 }, conditionTimeout, conditionTick)
	waitForLogWhere(t, r.logs, "a failed registration", func(line map[string]any) bool { return line["msg"] == "registration failed" })
	outputs.probeAll(t, "while the engine refuses", r.baseURL)

	gate.refuse.Store(false)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	outcome := &testkit.Outcome{Scenario: "secrets never leak"}
	const run = "run-attack-secrets"

	// Pushes with tokens the service refuses.
	otherSecret := engineMinterConfig(secret)
	otherSecret.Secret = securitytest.Secret(t)
	wrongIssuer := engineMinterConfig(secret)
	wrongIssuer.Issuer = "someone-else"
	expired := engineMinterConfig(secret)
	expired.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	for name, authorization := range map[string][]string{
		"no token":             nil,
		"Basic with secret":    {"Basic " + base64.StdEncoding.EncodeToString([]byte("engine:"+secret))},
		"bare secret":          {"Bearer " + secret},
		"other secret":         {"Bearer " + engineToken(t, otherSecret)},
		"wrong issuer":         {"Bearer " + engineToken(t, wrongIssuer)},
		"expired":              {"Bearer " + engineToken(t, expired)},
		"alg none":             {"Bearer " + unsignedToken(t, engineToken(t, engineMinterConfig(secret)))},
		"secret as the scheme": {secret + " " + engineToken(t, engineMinterConfig(secret))},
	} {
		ok, code, message := attackPush(t, engine, endpoint, run, "refused-"+strings.ReplaceAll(name, " ", "-"), authorization)
		assert.False(t, ok, name)
		assert.Equal(t, http.StatusUnauthorized, code, name)
		outputs.add("ack of the push with "+name, message)
	}

	valid := engineToken(t, engineMinterConfig(secret))
	needles.addPlain("an inbound token", valid)
	push := func(node, amount string) {
		t.Helper()
		ack, err := engine.Push(withBearer(deadline(t, conditionTimeout), valid), endpoint, taxPush(run, node, amount))
		require.NoError(t, err)
		require.True(t, ack.GetAccepted(), "%v", ack)
		outputs.add("ack of "+node, ack.String())
		outcome.Submitted(resultKey(run, node))
	}
	push("ok", "10")
	push("bad-input", "not-a-number")
	waitForUniqueResults(t, engine, 2, conditionTimeout)
	assert.Equal(t, domain.CodeInvalidInput, engine.UniqueResults()[resultKey(run, "bad-input")].GetError().GetCode())

	// A Kafka task through the SASL-authenticated broker.
	task := kafka.TaskMessage{RunID: run, NodeID: "kafka", Attempt: 1, Token: "token-kafka", TargetExecutor: kafkaNotificationExecutorID,
		Context: map[string]any{"recipient": "ops@example.com", "message": "hello"}}
	require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), task))
	outcome.Submitted(kafkatest.TaskKey(task))
	require.NoError(t, kafkaResults.WaitForUnique(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())

	// The engine refuses results for a while: they are retried, then land.
	refusedBefore := gate.refused.Load()
	gate.refuse.Store(true)
	push("held", "20")
	require.Eventually(t, func() bool { return gate.refused.Load() >= refusedBefore+2 }, conditionTimeout, conditionTick)
	outputs.probeAll(t, "while results are refused", r.baseURL)
	gate.refuse.Store(false)
	waitForUniqueResults(t, engine, 3, conditionTimeout)
	outputs.probeAll(t, "after the failures", r.baseURL)

	runErr := r.stop(t)
	outputs.add("the error Run returned", fmt.Sprint(runErr))
	outputs.add("stderr", stderr.String())
	outputs.add("the logs", r.logs.text())
	for _, res := range engine.Results() {
		outcome.Answer(domain.IdempotencyKey(res.GetRunId(), res.GetNodeId(), int(res.GetAttempt())))
		outputs.add("result "+res.GetNodeId(), attackJSON(t, res))
	}
	for _, res := range kafkaResults.All() {
		outcome.Answer(kafkatest.ResultKey(res))
		outputs.add("Kafka result "+res.NodeID, attackJSON(t, res))
	}
	outcome.Notes = map[string]any{"needles": len(needles.values), "engineRefusals": gate.refused.Load()}
	outcome.Check(t)

	// The start-up dump shows the configuration, secrets redacted.
	dump := logLineContaining(t, r.logs, "starting executor service")
	raw := attackJSON(t, dump)
	assert.Contains(t, raw, `"GAMELAN_EXECUTOR_JWT_SECRET":"[redacted]"`, "the dump: %s", raw)
	assert.Contains(t, raw, `"GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD":"[redacted]"`, "the dump: %s", raw)
	assert.Contains(t, raw, serviceServer.keyFile, "the dump names the key file")

	seen := gate.seenTokens()
	require.NotEmpty(t, seen, "the engine saw none of the service's tokens")
	for i, token := range seen {
		needles.addPlain(fmt.Sprintf("token %d the service sent", i), token)
	}
	outputs.check(t, &needles)
}

// attackJSON marshals v for searching.
func attackJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return string(raw)
}

// TestAttackSecretsNeverLeakFromBadConfiguration starts the service with a
// bad value for each secret-typed variable, and for the TLS key files, in
// turn: each start fails with one line naming the variable or the file, and
// neither that line, nor anything written on stdout or stderr, shows a
// secret in any encoding.
func TestAttackSecretsNeverLeakFromBadConfiguration(t *testing.T) {
	t.Parallel()
	secret := printableSecret(t)
	shortSecret := attackRandomText(t, 31)
	saslPassword := "sasl-" + attackRandomText(t, 24)
	urlPassword := "url-" + attackRandomText(t, 20)
	ca := attackNewCA(t, "attack CA")
	cert := ca.issueValid(t, "service", attackServerUsage)
	otherKey := ca.issueValid(t, "other", attackServerUsage)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret.txt")
	require.NoError(t, os.WriteFile(secretFile, []byte(secret+"\n"), 0o600))

	var needles attackNeedles
	needles.add("JWT secret", []byte(secret))
	needles.add("short JWT secret", []byte(shortSecret))
	needles.add("SASL password", []byte(saslPassword))
	needles.add("URL password", []byte(urlPassword))
	needles.addKeyFile(t, "private key", cert.keyFile)
	needles.addKeyFile(t, "mismatched private key", otherKey.keyFile)
	needles.requireFinds(t, []byte(secret), []byte(shortSecret), []byte(saslPassword), []byte(urlPassword))

	grpcTLS := func(certFile, keyFile string) map[string]string {
		vars := grpcEnv(unusedAddress(t), "push")
		vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
		vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
		vars["GAMELAN_EXECUTOR_GRPC_USE_SSL"] = "true"
		vars["GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH"] = certFile
		vars["GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH"] = keyFile
		return vars
	}
	kafkaSASL := func(mechanism, user string) map[string]string {
		vars := grpcEnv(unusedAddress(t), "push")
		vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
		vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka"
		vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = unusedAddress(t)
		vars["GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM"] = mechanism
		vars["GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME"] = user
		vars["GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD"] = saslPassword
		return vars
	}
	kafkaTLS := func(keyFile string) map[string]string {
		vars := kafkaSASL("PLAIN", "executor")
		vars["GAMELAN_EXECUTOR_KAFKA_TLS"] = "true"
		vars["GAMELAN_EXECUTOR_KAFKA_CA_CERTIFICATE_PATH"] = ca.file
		vars["GAMELAN_EXECUTOR_KAFKA_CLIENT_CERTIFICATE_PATH"] = cert.certFile
		vars["GAMELAN_EXECUTOR_KAFKA_CLIENT_PRIVATE_KEY_PATH"] = keyFile
		return vars
	}
	withVar := func(vars map[string]string, name, value string) map[string]string {
		vars[name] = value
		return vars
	}

	cases := []struct {
		name string
		vars map[string]string
		want string // what the one error line must name
	}{
		{"JWT secret too short", withVar(grpcEnv(unusedAddress(t), "push"), "GAMELAN_EXECUTOR_JWT_SECRET", shortSecret), "GAMELAN_EXECUTOR_JWT_SECRET"},
		{"SASL password without a user", kafkaSASL("PLAIN", ""), "GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME"},
		{"SASL password with an unknown mechanism", kafkaSASL("PLAINTEXT", "executor"), "GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM"},
		{"engine URL with a password that does not parse", withVar(grpcEnv(unusedAddress(t), "push"),
			"GAMELAN_EXECUTOR_ENGINE_URL", "http://executor:"+urlPassword+"%zz@engine:8080"), "GAMELAN_EXECUTOR_ENGINE_URL"},
		{"gRPC key not matching the certificate", grpcTLS(cert.certFile, otherKey.keyFile), otherKey.keyFile},
		{"gRPC certificate and key swapped", grpcTLS(cert.keyFile, cert.certFile), cert.keyFile},
		{"gRPC key path naming the secret's file", grpcTLS(cert.certFile, secretFile), secretFile},
		{"Kafka client key not matching the certificate", kafkaTLS(otherKey.keyFile), otherKey.keyFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(t.Context(), conditionTimeout)
			defer cancel()
			err := runFixtures(ctx, nil, tc.vars, &stdout, &stderr)
			require.Error(t, err, "the service started with a bad %s; logs:\n%s", tc.name, stdout.String())
			line := "executor: " + err.Error() // as main prints it
			t.Logf("%s", line)
			assert.NotContains(t, line, "\n", "the error is one line")
			assert.Contains(t, line, tc.want)
			needles.check(t, tc.name+": the error", line)
			needles.check(t, tc.name+": stdout", stdout.String())
			needles.check(t, tc.name+": stderr", stderr.String())
		})
	}
}

// TestAttackSecretsNeverLeakOnKafkaAuthenticationFailure runs the service
// against a SASL broker with a wrong password: the consumer group cannot
// join, the service says so in its log and its readiness, and neither the
// wrong password nor the right one shows anywhere it wrote.
func TestAttackSecretsNeverLeakOnKafkaAuthenticationFailure(t *testing.T) {
	t.Parallel()
	rightPassword := "sasl-" + attackRandomText(t, 24)
	wrongPassword := "sasl-" + attackRandomText(t, 24)
	secret := printableSecret(t)
	var needles attackNeedles
	needles.add("right SASL password", []byte(rightPassword))
	needles.add("wrong SASL password", []byte(wrongPassword))
	needles.add("JWT secret", []byte(secret))
	needles.requireFinds(t, []byte(rightPassword), []byte(wrongPassword))

	broker := kafkatest.Start(t, kafkatest.WithSASL(kafkatest.SASLScramSHA256, "executor", rightPassword))
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	vars["GAMELAN_EXECUTOR_JWT_INBOUND"] = "off"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	vars["GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM"] = kafkatest.SASLScramSHA256
	vars["GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME"] = "executor"
	vars["GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD"] = wrongPassword
	r, stderr := attackCapturing(t, vars)
	var outputs attackOutputs

	failure := waitForLogWhere(t, r.logs, "a Kafka failure", func(line map[string]any) bool {
		msg, _ := line["msg"].(string)
		return strings.Contains(msg, "kafka") && line["level"] != "DEBUG" && line["level"] != "INFO"
	})
	t.Logf("%s: %v", failure["msg"], failure["error"])
	outputs.probeAll(t, "while Kafka refuses", r.baseURL)
	code, reason := readinessReason(t, r.baseURL)
	assert.Equal(t, http.StatusServiceUnavailable, code, "ready without Kafka: %s", reason)
	require.NoError(t, r.stop(t))
	_, registered := engine.Registration(kafkaTaxExecutorID)
	t.Logf("readiness said %q; registered: %v", reason, registered)
	outputs.add("stderr", stderr.String())
	outputs.add("the logs", r.logs.text())
	outputs.check(t, &needles)
}
