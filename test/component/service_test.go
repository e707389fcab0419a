package component

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/version"
)

func TestServiceRunsExampleTasksEndToEnd(t *testing.T) {
	r := startWithEngine(t, baseEnv())
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)

	tasks := []domain.Task{
		// The Gamelan push path sends every variable as a string.
		{RunID: "run-1", NodeID: "tax", ExecutorType: "calculate-tax", Attempt: 1, Context: map[string]any{"amount": "250.5"}},
		{RunID: "run-1", NodeID: "tax-bad", ExecutorType: "calculate-tax", Attempt: 1, Context: map[string]any{"amount": "lots"}},
		{RunID: "run-1", NodeID: "order", NodeType: "order-validator", Attempt: 1, Context: map[string]any{"orderId": "ORDER-42"}},
		{RunID: "run-1", NodeID: "order-bad", Attempt: 1, Context: map[string]any{domain.NodeTypeKey: "order-validator", "orderId": "42"}},
		{RunID: "run-1", NodeID: "pay", ExecutorType: "payment-processor", Attempt: 1, Context: map[string]any{"totalAmount": 99.9, "customerId": "C-7"}},
		{RunID: "run-1", NodeID: "notification-sender", Attempt: 1, Context: map[string]any{"recipient": "ops@example.com", "message": "done"}},
		{RunID: "run-1", NodeID: "mystery", ExecutorType: "not-hosted", Attempt: 1},
	}
	for _, task := range tasks {
		r.engine.Submit(task)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.engine.WaitForResults(ctx, len(tasks)))
	results := r.engine.UniqueResults()

	tax := results["run-1:tax:1"]
	require.Equal(t, domain.StatusCompleted, tax.Status, "%+v", tax.Error)
	assert.InDelta(t, 25.05, tax.Output["tax"], 1e-9)
	assert.Equal(t, "executor-calculate-tax", tax.ExecutorID)
	assert.Equal(t, domain.CodeInvalidInput, results["run-1:tax-bad:1"].Error.Code)

	order := results["run-1:order:1"]
	require.Equal(t, domain.StatusCompleted, order.Status)
	assert.Equal(t, true, order.Output["valid"])
	_, err := time.Parse(time.RFC3339, order.Output["validatedAt"].(string))
	assert.NoError(t, err)
	badOrder := results["run-1:order-bad:1"]
	assert.Equal(t, "INVALID_ORDER", badOrder.Error.Code)
	assert.Equal(t, "42", badOrder.Error.Context["orderId"])

	pay := results["run-1:pay:1"]
	require.Equal(t, domain.StatusCompleted, pay.Status, "%+v", pay.Error)
	assert.True(t, strings.HasPrefix(pay.Output["transactionId"].(string), "TXN-"))
	assert.Equal(t, "C-7", pay.Output["customerId"])

	note := results["run-1:notification-sender:1"]
	require.Equal(t, domain.StatusCompleted, note.Status, "%+v", note.Error)
	assert.Equal(t, true, note.Output["sent"])

	assert.Equal(t, domain.CodeNoExecutor, results["run-1:mystery:1"].Error.Code)

	// Every example type registered, with a name, version and host, and
	// the build of the binary, over each transport.
	build := version.Get()
	for _, typ := range []string{"calculate-tax", "order-validator", "payment-processor", "notification-sender"} {
		reg, ok := r.engine.Registration("executor-" + typ)
		require.True(t, ok, "%s not registered", typ)
		assert.Equal(t, typ, reg.Descriptor.Type)
		assert.Equal(t, "executor", reg.Metadata["name"])
		assert.NotEmpty(t, reg.Metadata["host"])
		assert.Equal(t, build.Version, reg.Metadata[service.MetadataBuildVersion], typ)
		assert.Equal(t, build.Commit, reg.Metadata[service.MetadataBuildCommit], typ)
	}
	paymentReg, _ := r.engine.Registration("executor-payment-processor")
	assert.Equal(t, domain.CommunicationKafka, paymentReg.CommunicationType)
	assert.Equal(t, 10, paymentReg.Descriptor.MaxConcurrentTasks)
	orderReg, _ := r.engine.Registration("executor-order-validator")
	assert.Equal(t, 20, orderReg.Descriptor.MaxConcurrentTasks)

	// Every task line carries the task's identity.
	line := r.logs.waitFor(t, "task finished")
	for _, key := range []string{"run_id", "node_id", "task_id", "attempt", "executor_type"} {
		assert.Contains(t, line, key)
	}

	// The metrics count what happened, by type and status (the delivery
	// counter moves just after the engine has the results).
	require.Eventually(t, func() bool {
		resp, err := http.Get(r.baseURL + "/q/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		metrics, err := io.ReadAll(resp.Body)
		return err == nil &&
			strings.Contains(string(metrics), `gamelan_executor_tasks_total{executor_type="calculate-tax",status="COMPLETED"} 1`) &&
			strings.Contains(string(metrics), `gamelan_executor_tasks_total{executor_type="order-validator",status="FAILED"} 1`) &&
			strings.Contains(string(metrics), `gamelan_executor_results_delivered_total{transport="given"} 7`)
	}, 5*time.Second, 5*time.Millisecond, "/q/metrics does not show the tasks")

	require.NoError(t, r.stop(t))
	assert.ElementsMatch(t, []string{"executor-calculate-tax", "executor-order-validator", "executor-payment-processor", "executor-notification-sender"},
		r.engine.Unregistered())
}

func TestHealthProbes(t *testing.T) {
	r := startWithEngine(t, baseEnv())
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)

	for _, path := range []string{"/q/health/started", "/q/health/live", "/q/health/ready", "/q/health"} {
		status, body := probe(t, r.baseURL, path)
		assert.Equal(t, http.StatusOK, status, path)
		assert.Equal(t, "UP", body.Status, path)
		assert.NotEmpty(t, body.Checks, path)
	}
	_, all := probe(t, r.baseURL, "/q/health")
	var names []string
	for _, c := range all.Checks {
		names = append(names, c.Name)
	}
	assert.ElementsMatch(t, []string{"runtime", "executor"}, names)
}

// TestProfilingIsServedOnlyWhenAskedFor: /debug/pprof/ is absent by
// default and served, CPU profile and execution trace included, with
// GAMELAN_EXECUTOR_PROFILING=true.
func TestProfilingIsServedOnlyWhenAskedFor(t *testing.T) {
	get := func(base, path string) int {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	off := startWithEngine(t, baseEnv())
	waitForStatus(t, off.baseURL, "/q/health/ready", http.StatusOK)
	assert.Equal(t, http.StatusNotFound, get(off.baseURL, "/debug/pprof/"))

	vars := baseEnv()
	vars["GAMELAN_EXECUTOR_PROFILING"] = "true"
	on := startWithEngine(t, vars)
	waitForStatus(t, on.baseURL, "/q/health/ready", http.StatusOK)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"} {
		assert.Equal(t, http.StatusOK, get(on.baseURL, path), path)
	}
}

func TestShutdownDrainsInFlightTasksWhileNotReady(t *testing.T) {
	vars := baseEnv()
	vars["PAYMENT_GATEWAY_DELAY"] = "3s"
	vars["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "1"
	r := startWithEngine(t, vars)
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)

	for i := range 5 {
		r.engine.Submit(domain.Task{RunID: "drain", NodeID: fmt.Sprintf("pay-%d", i), ExecutorType: "payment-processor", Attempt: 1,
			Context: map[string]any{"totalAmount": "10", "customerId": "C"}})
	}
	// Wait until all five handlers run (the heartbeat reports them), so that
	// none is an unstarted task the stop would rightly hand back.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.engine.WaitUntil(ctx, func() bool {
		hb, ok := r.engine.LastHeartbeat("executor-payment-processor")
		return ok && hb.CurrentTasks == 5
	}))

	r.cancel()
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusServiceUnavailable)
	select {
	case err := <-r.done:
		r.done <- err
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("service did not stop")
	}
	results := r.engine.UniqueResults()
	for i := range 5 {
		res, ok := results[fmt.Sprintf("drain:pay-%d:1", i)]
		require.True(t, ok, "task %d lost in the drain", i)
		assert.Equal(t, domain.StatusCompleted, res.Status)
	}
	assert.Len(t, r.engine.Unregistered(), 4)
}

// TestDefaultsStartAndStopCleanly runs the service with its defaults (the
// gRPC transport and control plane) and no engine to talk to: it stays live,
// says why it is not ready, and stops cleanly.
func TestDefaultsStartAndStopCleanly(t *testing.T) {
	vars := map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST": "127.0.0.1", "GAMELAN_EXECUTOR_HTTP_PORT": "0",
		"GAMELAN_EXECUTOR_GRPC_HOST": "127.0.0.1", "GAMELAN_EXECUTOR_GRPC_PORT": "0",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET":      unusedAddress(t),
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS": unusedAddress(t),
	}
	r := start(t, nil, func(ctx context.Context, stdout, stderr io.Writer) error {
		return runFixtures(ctx, nil, vars, stdout, stderr)
	})
	waitForStatus(t, r.baseURL, "/q/health/live", http.StatusOK)
	status, body := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Equal(t, "DOWN", body.Status)
	r.logs.waitFor(t, "registration failed")
	require.NoError(t, r.stop(t))
	r.logs.waitFor(t, "service stopped")
}

// unusedAddress returns a loopback address nothing listens on.
func unusedAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestBadConfigurationStopsStartupWithOneLine(t *testing.T) {
	certDir := t.TempDir()
	cases := map[string]struct {
		variable, value string
	}{
		"negative pool size":        {"GAMELAN_EXECUTOR_THREAD_POOL_SIZE", "-4"},
		"pool size not a number":    {"GAMELAN_EXECUTOR_THREAD_POOL_SIZE", "many"},
		"heartbeat above timeout":   {"GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS", "90"},
		"unknown transport":         {"GAMELAN_EXECUTOR_TRANSPORT", "carrier-pigeon"},
		"malformed engine URL":      {"GAMELAN_EXECUTOR_ENGINE_URL", "http//engine"},
		"unreadable certificate":    {"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH", certDir + "/missing.pem"},
		"override of unhosted type": {"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "no-such-type=memory"},
		"unknown enabled type":      {"GAMELAN_EXECUTOR_ENABLED_TYPES", "calculate-tax,nope"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			// Reserve a port so that we can tell whether the service bound it.
			reserved, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			port := reserved.Addr().(*net.TCPAddr).Port
			require.NoError(t, reserved.Close())

			vars := baseEnv()
			vars["GAMELAN_EXECUTOR_HTTP_PORT"] = fmt.Sprint(port)
			vars[c.variable] = c.value
			logs := newLogLines()
			var stderr strings.Builder
			err = runFixtures(context.Background(), nil, vars, logs, &stderr)
			require.Error(t, err)
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "error is not one line")
			assert.Contains(t, msg, c.variable)
			assert.Contains(t, msg, c.value)
			assert.Empty(t, logs.text(), "something started before the configuration was rejected")

			again, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			require.NoError(t, err, "the HTTP port was left bound")
			again.Close()
		})
	}
}

func TestHTTPPortInUseFailsStartup(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	vars := baseEnv()
	vars["GAMELAN_EXECUTOR_HTTP_PORT"] = fmt.Sprint(taken.Addr().(*net.TCPAddr).Port)
	err = runFixtures(context.Background(), nil, vars, newLogLines(), &strings.Builder{})
	require.ErrorContains(t, err, "listen for HTTP")
}

func TestUnexpectedArgumentsAreRefused(t *testing.T) {
	err := runFixtures(context.Background(), []string{"serve"}, baseEnv(), newLogLines(), &strings.Builder{})
	require.ErrorContains(t, err, "unexpected arguments")
	var stderr strings.Builder
	err = runFixtures(context.Background(), []string{"-h"}, baseEnv(), newLogLines(), &stderr)
	assert.True(t, errors.Is(err, flag.ErrHelp))
	assert.Contains(t, stderr.String(), "-variables")
}
