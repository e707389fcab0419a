package component

import (
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// The service registered over HTTP (REGISTRAR=rest) with a resttest
// registry: how the Gamelan engine learns about Kafka executors, and how
// registration and heartbeats ride out an engine's faults.

// TestHTTPRegistrarWithKafkaTransport is the HTTP adapter's "done when": an
// executor configured with REGISTRAR=rest and TRANSPORT=kafka registers over
// HTTP, with a token naming it on every call, is listed by GET
// /api/v1/executors as a KAFKA executor reached through the tasks topic,
// answers a Kafka task on the results topic, heartbeats over HTTP, and
// unregisters when it stops.
func TestHTTPRegistrarWithKafkaTransport(t *testing.T) {
	t.Parallel()
	secret := hex.EncodeToString(securitytest.Secret(t))
	verifier, err := security.NewVerifier(security.VerifierConfig{
		Secret: []byte(secret), Issuer: "gamelan-executor", Audience: "gamelan-engine",
	})
	require.NoError(t, err)
	registry := resttest.Start(t, resttest.WithAuth(func(token string) error {
		_, err := verifier.Verify(token)
		return err
	}))
	broker := kafkatest.Start(t)
	vars := httpRegistrarEnv(registry)
	vars["GAMELAN_EXECUTOR_TRANSPORT"] = "kafka"
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	// Kafka tasks carry no token from Gamelan; inbound checks are not what
	// this test is about.
	vars["GAMELAN_EXECUTOR_JWT_INBOUND"] = "off"
	const executorID = "executor-payment-processor" // NAME-type: Kafka replicas share it
	r := startService(t, vars)

	waitForRegistry(t, r, registry, "the registration", func() bool { return registry.RegisterCalls(executorID) > 0 })
	waitForReadiness(t, r, registry, http.StatusOK)
	operator, err := security.NewMinter(security.MinterConfig{
		Secret: []byte(secret), Issuer: "gamelan-executor", Audience: "gamelan-engine", TTL: time.Minute, Subject: "operator",
	})
	require.NoError(t, err)
	token, err := operator.Token("")
	require.NoError(t, err)
	listed := listedExecutors(t, registry, token)
	require.Len(t, listed, 1, "%+v", listed)
	info := listed[0]
	assert.Equal(t, executorID, info.ExecutorID)
	assert.Equal(t, "payment-processor", info.ExecutorType)
	assert.Equal(t, "KAFKA", info.CommunicationType)
	assert.Equal(t, kafkatest.TasksTopic, info.Endpoint, "a Kafka executor is reached through the tasks topic")
	assert.EqualValues(t, 300, info.Timeout, "TASK_TIMEOUT_SECONDS")
	assert.Equal(t, "executor", info.Metadata["name"])
	assert.Equal(t, "payment-processor", info.Metadata["supportedNodeTypes"])
	assert.Equal(t, "10", info.Metadata["maxConcurrentTasks"])

	results := broker.Results(t)
	task := kafka.TaskMessage{
		RunID: "run-http-registrar", NodeID: "pay-1", Attempt: 1, Token: "token-pay-1",
		Context:        map[string]any{"totalAmount": 25.5, "customerId": "cust-1"},
		TargetExecutor: executorID,
	}
	require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), task))
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())
	res := results.UniqueResults()[kafkatest.ResultKey(kafka.ResultMessage{RunID: task.RunID, NodeID: task.NodeID, Attempt: 1})]
	assert.Equal(t, "COMPLETED", res.Status, "%+v", res.Error)
	assert.Equal(t, executorID, res.ExecutorID)
	assert.Equal(t, "token-pay-1", res.ExecutionToken)
	assert.Equal(t, 25.5, res.Output["amount"])

	waitForRegistry(t, r, registry, "a heartbeat over HTTP", func() bool { return len(registry.Heartbeats(executorID)) > 0 })
	require.NoError(t, r.stop(t))
	// The Kafka executor id is shared by every replica, so the stopping one
	// leaves it registered: the engine ages it out when heartbeats stop.
	_, registered := registry.Executor(executorID)
	assert.True(t, registered, "a replica unregistered a shared Kafka executor id:\n%s", registryRequests(registry))

	assert.Zero(t, registry.Refused(), "the registry refused a token:\n%s", registryRequests(registry))
	for _, req := range registry.Requests() {
		if req.ExecutorID == "" {
			continue // the test's own listing
		}
		sent, err := security.BearerToken(req.Authorization)
		require.NoError(t, err, "%s %s", req.Method, req.Path)
		claims, err := verifier.Verify(sent)
		require.NoError(t, err, "%s %s", req.Method, req.Path)
		assert.Equal(t, executorID, claims.Subject, "%s %s", req.Method, req.Path)
	}
}

// TestHTTPRegistrationRecoversFromEngineFaults: the engine answers 500, then
// hangs past the request timeout, then is unreachable, then comes back on
// the same port. The service is not ready while its registration fails, and
// registration and heartbeats recover on their own, without a restart.
func TestHTTPRegistrationRecoversFromEngineFaults(t *testing.T) {
	t.Parallel()
	registry := resttest.Start(t)
	vars := httpRegistrarEnv(registry)
	vars["GAMELAN_EXECUTOR_TRANSPORT"] = "memory"
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
	const executorID = "executor-calculate-tax"
	r := startService(t, vars)
	waitForReadiness(t, r, registry, http.StatusOK)

	// 500 on everything: a failed heartbeat is followed by a failed
	// re-registration, and the service says it is not registered.
	registry.FailNext(1<<30, http.StatusInternalServerError)
	waitForReadiness(t, r, registry, http.StatusServiceUnavailable)
	_, reason := readinessReason(t, r.baseURL)
	assert.Contains(t, reason, "not registered")
	assert.Contains(t, reason, "500 Internal Server Error")

	// Hanging past ENGINE_HTTP_TIMEOUT_SECONDS: requests are given up.
	hangFrom := time.Now()
	registry.Hang(time.Minute)
	registry.FailNext(0, 0)
	waitForRegistry(t, r, registry, "a request given up by the executor", func() bool {
		return len(registryRequestsWhere(registry, func(req resttest.Request) bool {
			return req.Time.After(hangFrom) && req.Abandoned() && req.Ended.Sub(req.Time) < 5*time.Second
		})) > 0
	})
	code, _ := readinessReason(t, r.baseURL)
	assert.Equal(t, http.StatusServiceUnavailable, code, "ready while the engine hangs")

	// Unreachable.
	registry.Stop()
	registry.Hang(0)
	stoppedAt := time.Now()
	waitForLogWhere(t, r.logs, "a registration refused by the stopped engine", func(line map[string]any) bool {
		logged, _ := time.Parse(time.RFC3339Nano, stringOf(line["time"]))
		return line["msg"] == "registration failed" && logged.After(stoppedAt) &&
			strings.Contains(stringOf(line["error"]), "connection refused")
	})
	code, _ = readinessReason(t, r.baseURL)
	assert.Equal(t, http.StatusServiceUnavailable, code, "ready while the engine is unreachable")

	// Back on the same port, with its state: the service registers again
	// and heartbeats, without a restart.
	backAt := time.Now()
	registry.Restart(t)
	waitForReadiness(t, r, registry, http.StatusOK)
	waitForRegistry(t, r, registry, "a registration and a heartbeat after the engine came back", func() bool {
		registered := registryRequestsWhere(registry, func(req resttest.Request) bool {
			return req.Time.After(backAt) && isRegistration(req, executorID) && req.Status == http.StatusOK
		})
		beats := registryRequestsWhere(registry, func(req resttest.Request) bool {
			return req.Time.After(backAt) && isHeartbeat(req, executorID) && req.Status == http.StatusOK
		})
		return len(registered) > 0 && len(beats) > 0
	})
	select {
	case err := <-r.done:
		t.Fatalf("the service stopped during the faults: %v", err)
	default:
	}
	require.NoError(t, r.stop(t))
}

// TestHTTPHeartbeatAnswered404ReregistersOncePerInterval: while the engine
// has forgotten the executor and answers its heartbeats 404, the service
// re-registers once per refused heartbeat, that is once per heartbeat
// interval, never in a storm.
func TestHTTPHeartbeatAnswered404ReregistersOncePerInterval(t *testing.T) {
	t.Parallel()
	const refusedHeartbeats = 4
	interval := time.Second // HEARTBEAT_INTERVAL_SECONDS, jittered by 10%
	registry := resttest.Start(t)
	vars := httpRegistrarEnv(registry)
	vars["GAMELAN_EXECUTOR_TRANSPORT"] = "memory"
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
	const executorID = "executor-calculate-tax"
	r := startService(t, vars)
	waitForReadiness(t, r, registry, http.StatusOK)
	waitForRegistry(t, r, registry, "a first heartbeat", func() bool { return len(registry.Heartbeats(executorID)) > 0 })

	from := time.Now()
	registry.Forget(executorID)
	registry.FailHeartbeats(http.StatusNotFound)
	refused := func() []resttest.Request {
		return registryRequestsWhere(registry, func(req resttest.Request) bool {
			return req.Time.After(from) && isHeartbeat(req, executorID) && req.Status == http.StatusNotFound
		})
	}
	waitForRegistry(t, r, registry, "refused heartbeats", func() bool { return len(refused()) >= refusedHeartbeats })
	registry.FailHeartbeats(0)
	// The window closes at the first heartbeat accepted again: by then
	// every refused heartbeat has had its re-registration.
	var until time.Time
	waitForRegistry(t, r, registry, "a heartbeat accepted again", func() bool {
		accepted := registryRequestsWhere(registry, func(req resttest.Request) bool {
			return req.Time.After(from) && isHeartbeat(req, executorID) && req.Status == http.StatusOK
		})
		if len(accepted) == 0 {
			return false
		}
		until = accepted[0].Time
		return true
	})

	inWindow := func(req resttest.Request) bool { return req.Time.After(from) && req.Time.Before(until) }
	reregistrations := registryRequestsWhere(registry, func(req resttest.Request) bool {
		return inWindow(req) && isRegistration(req, executorID)
	})
	// What tells the executor it was forgotten: a heartbeat answered 404,
	// or (for a heartbeat that raced with Forget) the lookup after it.
	forgotten := registryRequestsWhere(registry, func(req resttest.Request) bool {
		return inWindow(req) && req.ExecutorID == executorID && req.Status == http.StatusNotFound
	})
	requests := registryRequests(registry)
	intervals := int(until.Sub(from) / interval)
	require.GreaterOrEqual(t, len(reregistrations), 1, "no re-registration after heartbeats answered 404:\n%s", requests)
	assert.LessOrEqual(t, len(reregistrations), intervals+1, "a re-registration storm: %d in %s:\n%s", len(reregistrations), until.Sub(from), requests)
	assert.Len(t, reregistrations, len(forgotten), "one re-registration per 404:\n%s", requests)
	for i := 1; i < len(reregistrations); i++ {
		gap := reregistrations[i].Time.Sub(reregistrations[i-1].Time)
		assert.GreaterOrEqual(t, gap, interval*85/100, "re-registrations %d and %d only %s apart:\n%s", i-1, i, gap, requests)
	}
	_, registered := registry.Executor(executorID)
	assert.True(t, registered, "registered again")
	code, _ := readinessReason(t, r.baseURL)
	assert.Equal(t, http.StatusOK, code, "re-registrations that succeed keep the service ready")
	require.NoError(t, r.stop(t))
}

func stringOf(v any) string {
	s, _ := v.(string)
	return s
}
