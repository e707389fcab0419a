package e2e

import (
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// The reference engine as a process, its HTTP API as a client sees it, and
// executor processes configured to talk to it.

// answerTimeout bounds how long the tests wait for tasks to be answered.
const answerTimeout = 60 * time.Second

// freePort returns a port of 127.0.0.1 that was free a moment ago: the
// kernel's pick for a listener that is closed at once.
func freePort(t *testing.T) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := listener.Addr().(*net.TCPAddr).Port
	require.NoError(t, listener.Close())
	return port
}

// freeAddr returns 127.0.0.1:<a free port>.
func freeAddr(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

// engineProcess is a reference engine process and its addresses.
type engineProcess struct {
	*process
	httpAddr, grpcAddr, kafkaAddr string
	api                           *testkit.EngineAPI
}

// startEngine runs the reference engine on free ports of 127.0.0.1 with
// vars (DEVENGINE_*) as its only environment besides PATH, and waits until
// it listens. A port taken between its pick and the engine's bind (another
// process of a parallel test took it) is tried again with new ports.
func startEngine(t *testing.T, name string, vars map[string]string) *engineProcess {
	t.Helper()
	for attempt := 1; ; attempt++ {
		e := &engineProcess{httpAddr: freeAddr(t), grpcAddr: freeAddr(t), kafkaAddr: freeAddr(t)}
		cmd := exec.Command(devengineBinary(t), "-http", e.httpAddr, "-grpc", e.grpcAddr, "-kafka", e.kafkaAddr)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for _, k := range slices.Sorted(maps.Keys(vars)) {
			cmd.Env = append(cmd.Env, k+"="+vars[k])
		}
		e.process = startCommand(t, name, cmd)
		if e.listens(t) {
			e.api = testkit.NewEngineAPI(e.httpAddr)
			return e
		}
		require.Less(t, attempt, 3, "engine %s could not listen; stderr:\n%s", name, e.stderr.String())
		t.Logf("engine %s lost a port to another process, retrying: %s", name, strings.TrimSpace(e.stderr.String()))
	}
}

// listens waits until the engine logs that it listens, and reports false
// when it exited because an address was in use.
func (e *engineProcess) listens(t *testing.T) bool {
	t.Helper()
	timeout := time.After(startTimeout)
	for {
		e.mu.Lock()
		changed := e.changed
		e.mu.Unlock()
		if len(e.linesContaining("reference engine listening")) > 0 {
			return true
		}
		select {
		case <-changed:
		case <-e.exited:
			if strings.Contains(e.stderr.String(), "address already in use") {
				return false
			}
			t.Fatalf("engine %s exited (%v) before listening; stdout:\n%s\nstderr:\n%s", e.name, e.waitErr, e.text(), e.stderr.String())
		case <-timeout:
			t.Fatalf("engine %s did not listen within %s; stdout:\n%s", e.name, startTimeout, e.text())
		}
	}
}

// executorEnv is the environment of an executor process talking to the
// engine over every control and task path: its ExecutorService, its REST
// registry and its embedded broker. Every server binds 127.0.0.1 on a free
// port. Callers add or replace variables.
func (e *engineProcess) executorEnv(instance string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_INSTANCE_ID":              instance,
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET":       e.grpcAddr,
		"GAMELAN_EXECUTOR_ENGINE_URL":               "http://" + e.httpAddr,
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS":  e.kafkaAddr,
		"GAMELAN_EXECUTOR_HTTP_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":                "0",
		"GAMELAN_EXECUTOR_REST_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_REST_PORT":                "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                "info",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "10",
		"PAYMENT_GATEWAY_DELAY":                     "10ms",
	}
}

// startExecutor starts an executor process with env and waits until it
// is ready (registered, intake connected) and the engine lists every one
// of executorIDs as healthy.
func (e *engineProcess) startExecutor(t *testing.T, name string, env map[string]string, executorIDs ...string) *process {
	t.Helper()
	p := startProcess(t, name, env)
	p.waitReady(t)
	e.api.WaitExecutors(t, startTimeout, executorIDs...)
	return p
}

// stop sends SIGTERM to the engine and checks that it exits cleanly.
func (e *engineProcess) stop(t *testing.T) {
	t.Helper()
	e.signal(t, sigterm)
	require.NoError(t, e.wait(t), "engine %s exits cleanly; stderr:\n%s", e.name, e.stderr.String())
}

// The example workloads and what their answers must be.

// taxSpec is a calculate-tax task of amount.
func taxSpec(amount float64) testkit.TaskSpec {
	return testkit.TaskSpec{ExecutorType: "calculate-tax", Context: map[string]any{"amount": amount}, TimeoutSeconds: 30}
}

// orderSpec is an order-validator task of orderID.
func orderSpec(orderID string) testkit.TaskSpec {
	return testkit.TaskSpec{ExecutorType: "order-validator", Context: map[string]any{"orderId": orderID}, TimeoutSeconds: 30}
}

// paymentSpec is a payment-processor task of amount for customer.
func paymentSpec(amount float64, customer string) testkit.TaskSpec {
	return testkit.TaskSpec{ExecutorType: "payment-processor", Context: map[string]any{"totalAmount": amount, "customerId": customer}, TimeoutSeconds: 30}
}

// notificationSpec is a notification-sender task to recipient.
func notificationSpec(recipient, message string) testkit.TaskSpec {
	return testkit.TaskSpec{ExecutorType: "notification-sender", Context: map[string]any{"recipient": recipient, "message": message}, TimeoutSeconds: 30}
}

// checkAnswer checks that a final task carries the answer its type gives
// to its input: COMPLETED with the right output for valid input, FAILED
// with the type's code for bad input. Numbers may arrive as strings over
// push (Gamelan's variables are strings), which the handlers parse.
func checkAnswer(t *testing.T, spec testkit.TaskSpec, task testkit.EngineTask) bool {
	t.Helper()
	if task.Result == nil {
		t.Errorf("%s: no result", task)
		return false
	}
	ok := true
	fail := func(format string, args ...any) {
		t.Errorf("%s: "+format, append([]any{task}, args...)...)
		ok = false
	}
	expectCompleted := func() bool {
		if task.State != "COMPLETED" || task.Result.Status != "COMPLETED" {
			fail("want COMPLETED")
			return false
		}
		return true
	}
	expectFailed := func(code string) {
		if task.State != "FAILED" || task.Result.Error == nil || task.Result.Error.Code != code {
			fail("want FAILED %s", code)
		}
	}
	out := task.Result.Output
	switch spec.ExecutorType {
	case "calculate-tax":
		amount, isNumber := spec.Context["amount"].(float64)
		if !isNumber {
			expectFailed("INVALID_INPUT")
			break
		}
		if expectCompleted() {
			tax, _ := out["tax"].(float64)
			if out["amount"] != amount || !near(tax, amount*0.1) {
				fail("output %v, want amount %v and tax %v", out, amount, amount*0.1)
			}
		}
	case "order-validator":
		orderID, _ := spec.Context["orderId"].(string)
		if !strings.HasPrefix(orderID, "ORDER-") {
			expectFailed("INVALID_ORDER")
			break
		}
		if expectCompleted() {
			if out["valid"] != true {
				fail("output %v, want valid", out)
			}
			if _, err := time.Parse(time.RFC3339, fmt.Sprint(out["validatedAt"])); err != nil {
				fail("validatedAt of %v: %v", out, err)
			}
		}
	case "payment-processor":
		amount, _ := spec.Context["totalAmount"].(float64)
		if amount <= 0 {
			expectFailed("INVALID_PAYMENT")
			break
		}
		if expectCompleted() {
			transaction, _ := out["transactionId"].(string)
			if out["amount"] != amount || out["customerId"] != spec.Context["customerId"] || out["status"] != "COMPLETED" ||
				!strings.HasPrefix(transaction, "TXN-") {
				fail("output %v, want a transaction of %v for %v", out, amount, spec.Context["customerId"])
			}
		}
	case "notification-sender":
		recipient, _ := spec.Context["recipient"].(string)
		if recipient == "" {
			expectFailed("INVALID_INPUT")
			break
		}
		if expectCompleted() && (out["sent"] != true || out["recipient"] != recipient) {
			fail("output %v, want sent to %s", out, recipient)
		}
	default:
		fail("no expected answer for type %q", spec.ExecutorType)
	}
	return ok
}

// near compares floats computed on both sides of the wire.
func near(a, b float64) bool {
	d := a - b
	return d < 1e-9 && d > -1e-9
}

// checkAnswers checks the answer of every task (ids in the order of specs),
// stopping after a few failures.
func checkAnswers(t *testing.T, specs []testkit.TaskSpec, tasks []testkit.EngineTask) {
	t.Helper()
	require.Len(t, tasks, len(specs))
	wrong := 0
	for i, spec := range specs {
		if !checkAnswer(t, spec, tasks[i]) {
			wrong++
		}
		if wrong >= 5 {
			t.Fatalf("too many wrong answers")
		}
	}
}

// finishedRuns are the status of each task an executor logged finishing,
// by run id: the engine gives every task its own run, and over push the
// executor knows a task by its run, node and attempt only.
type finishedRuns map[string]string

// finishedRunsOf reads the "task finished" lines of an executor's log
// (successes are logged at debug, so the process must log at debug).
func finishedRunsOf(p *process) finishedRuns {
	out := finishedRuns{}
	for _, line := range p.linesWith("task finished") {
		run, _ := line["run_id"].(string)
		out[run], _ = line["status"].(string)
	}
	return out
}

// runsOf returns the run ids of tasks.
func runsOf(tasks []testkit.EngineTask) []string {
	runs := make([]string, len(tasks))
	for i, task := range tasks {
		runs[i] = task.RunID
	}
	return runs
}
