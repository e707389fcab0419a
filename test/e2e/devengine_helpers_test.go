package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The reference engine as a process, its HTTP API as a client sees it, and
// executor processes configured to talk to it.

// answerTimeout bounds how long the tests wait for tasks to be answered.
const answerTimeout = 60 * time.Second

// pollInterval paces the polling of the engine's API.
const pollInterval = 20 * time.Millisecond

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
	api                           *engineAPI
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
			e.api = newEngineAPI(e.httpAddr)
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
	e.api.waitExecutors(t, executorIDs...)
	return p
}

// stop sends SIGTERM to the engine and checks that it exits cleanly.
func (e *engineProcess) stop(t *testing.T) {
	t.Helper()
	e.signal(t, sigterm)
	require.NoError(t, e.wait(t), "engine %s exits cleanly; stderr:\n%s", e.name, e.stderr.String())
}

// engineAPI is a client of the engine's HTTP API.
type engineAPI struct {
	base   string
	client *http.Client
}

func newEngineAPI(httpAddr string) *engineAPI {
	return &engineAPI{base: "http://" + httpAddr, client: &http.Client{Timeout: 10 * time.Second}}
}

// taskSpec is what POST /api/v1/tasks takes.
type taskSpec struct {
	ExecutorType   string         `json:"executorType,omitempty"`
	NodeType       string         `json:"nodeType,omitempty"`
	Context        map[string]any `json:"context,omitempty"`
	TimeoutSeconds int            `json:"timeoutSeconds,omitempty"`
}

// apiTask is a task as GET /api/v1/tasks/{id} shows it.
type apiTask struct {
	TaskID       string     `json:"taskId"`
	RunID        string     `json:"runId"`
	NodeID       string     `json:"nodeId"`
	Attempt      int        `json:"attempt"`
	ExecutorType string     `json:"executorType"`
	State        string     `json:"state"`
	ExecutorID   string     `json:"executorId"`
	Transport    string     `json:"transport"`
	Deliveries   int        `json:"deliveries"`
	SubmittedAt  time.Time  `json:"submittedAt"`
	CompletedAt  time.Time  `json:"completedAt"`
	Result       *apiResult `json:"result"`
}

// apiResult is a task's recorded result.
type apiResult struct {
	Status string         `json:"status"`
	Output map[string]any `json:"output"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// final reports whether the task has a result.
func (task apiTask) final() bool { return task.State != "PENDING" && task.State != "ASSIGNED" }

// String names the task in messages.
func (task apiTask) String() string {
	s := fmt.Sprintf("%s %s %s on %q over %q (%d deliveries)", task.TaskID, task.ExecutorType, task.State,
		task.ExecutorID, task.Transport, task.Deliveries)
	if task.Result != nil && task.Result.Error != nil {
		s += fmt.Sprintf(": %s %s", task.Result.Error.Code, task.Result.Error.Message)
	}
	return s
}

// apiExecutor is an executor as GET /api/v1/executors shows it.
type apiExecutor struct {
	ExecutorID         string            `json:"executorId"`
	ExecutorType       string            `json:"executorType"`
	CommunicationType  string            `json:"communicationType"`
	Endpoint           string            `json:"endpoint"`
	SupportedNodeTypes []string          `json:"supportedNodeTypes"`
	MaxConcurrentTasks int               `json:"maxConcurrentTasks"`
	Metadata           map[string]string `json:"metadata"`
	RegisteredVia      string            `json:"registeredVia"`
	Healthy            bool              `json:"healthy"`
	AssignedTasks      int               `json:"assignedTasks"`
}

// apiSummary is GET /api/v1/summary.
type apiSummary struct {
	Tasks          int                       `json:"tasks"`
	ByState        map[string]int            `json:"byState"`
	FailuresByCode map[string]int            `json:"failuresByCode"`
	ByTransport    map[string]apiTransportSt `json:"byTransport"`
	Counters       struct {
		DuplicateResults int64 `json:"duplicateResults"`
		UnknownResults   int64 `json:"unknownResults"`
		RefusedCalls     int64 `json:"refusedCalls"`
	} `json:"counters"`
}

// apiTransportSt is one transport's line of the summary.
type apiTransportSt struct {
	Answered int     `json:"answered"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
}

// unfinished counts the tasks without a result.
func (s apiSummary) unfinished() int { return s.ByState["PENDING"] + s.ByState["ASSIGNED"] }

// call makes one request and decodes a JSON answer into out (when not
// nil), returning the status code.
func (a *engineAPI) call(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		require.NoError(t, err)
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, a.base+path, reader)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(t, json.Unmarshal(raw, out), "%s %s answered %s", method, path, raw)
	}
	return resp.StatusCode
}

// submit submits a task and returns it as the engine took it.
func (a *engineAPI) submit(t *testing.T, spec taskSpec) apiTask {
	t.Helper()
	var task apiTask
	require.Equal(t, http.StatusCreated, a.call(t, http.MethodPost, "/api/v1/tasks", spec, &task), "submit %+v", spec)
	require.NotEmpty(t, task.TaskID)
	return task
}

// submitAll submits every spec and returns the task ids in order.
func (a *engineAPI) submitAll(t *testing.T, specs []taskSpec) []string {
	t.Helper()
	ids := make([]string, len(specs))
	for i, spec := range specs {
		ids[i] = a.submit(t, spec).TaskID
	}
	return ids
}

// task reads one task.
func (a *engineAPI) task(t *testing.T, id string) apiTask {
	t.Helper()
	var task apiTask
	require.Equal(t, http.StatusOK, a.call(t, http.MethodGet, "/api/v1/tasks/"+id, nil, &task), "task %s", id)
	return task
}

// tasks reads the tasks of ids, in order.
func (a *engineAPI) tasks(t *testing.T, ids []string) []apiTask {
	t.Helper()
	out := make([]apiTask, len(ids))
	for i, id := range ids {
		out[i] = a.task(t, id)
	}
	return out
}

// executors lists the registry.
func (a *engineAPI) executors(t *testing.T) []apiExecutor {
	t.Helper()
	var list []apiExecutor
	require.Equal(t, http.StatusOK, a.call(t, http.MethodGet, "/api/v1/executors", nil, &list))
	return list
}

// executor returns the registry's entry of id, or false.
func (a *engineAPI) executor(t *testing.T, id string) (apiExecutor, bool) {
	t.Helper()
	for _, e := range a.executors(t) {
		if e.ExecutorID == id {
			return e, true
		}
	}
	return apiExecutor{}, false
}

// summary reads the summary.
func (a *engineAPI) summary(t *testing.T) apiSummary {
	t.Helper()
	var s apiSummary
	require.Equal(t, http.StatusOK, a.call(t, http.MethodGet, "/api/v1/summary", nil, &s))
	return s
}

// cancel asks the engine to cancel a task and returns the status code.
func (a *engineAPI) cancel(t *testing.T, id string) int {
	t.Helper()
	return a.call(t, http.MethodPost, "/api/v1/tasks/"+id+"/cancel", nil, nil)
}

// waitFor polls cond until it holds, failing after d with what cond last
// described.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, d, state)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: test ended", what)
		case <-time.After(pollInterval):
		}
	}
}

// waitExecutors waits until the engine lists every id as healthy.
func (a *engineAPI) waitExecutors(t *testing.T, ids ...string) {
	t.Helper()
	waitFor(t, startTimeout, fmt.Sprintf("executors %v registered and healthy", ids), func() (bool, string) {
		healthy := map[string]bool{}
		for _, e := range a.executors(t) {
			healthy[e.ExecutorID] = e.Healthy
		}
		for _, id := range ids {
			if !healthy[id] {
				return false, fmt.Sprintf("registry %v", healthy)
			}
		}
		return true, ""
	})
}

// waitAllFinal waits until the engine holds n tasks, every one final, and
// returns the summary.
func (a *engineAPI) waitAllFinal(t *testing.T, n int) apiSummary {
	t.Helper()
	var s apiSummary
	waitFor(t, answerTimeout, fmt.Sprintf("all %d tasks answered", n), func() (bool, string) {
		s = a.summary(t)
		return s.Tasks == n && s.unfinished() == 0, fmt.Sprintf("%d tasks by state %v", s.Tasks, s.ByState)
	})
	return s
}

// awaitTransport submits probe tasks of spec, one at a time, until one is
// delivered over transport, and returns the summary then. An executor
// pulling over a stream is ready once the stream is open on its side; the
// engine takes the stream a moment later and meanwhile delivers over push,
// which is always on. Probes that fail or take another transport fail
// nothing.
func (a *engineAPI) awaitTransport(t *testing.T, spec taskSpec, transport string) apiSummary {
	t.Helper()
	waitFor(t, startTimeout, "a task delivered over "+transport, func() (bool, string) {
		probe := a.submit(t, spec)
		answered := a.waitTasks(t, answerTimeout, "a probe answered", []string{probe.TaskID}, func(tasks []apiTask) bool { return tasks[0].final() })
		return answered[0].Transport == transport, answered[0].String()
	})
	return a.summary(t)
}

// since returns the counts of s that came after before: tasks, states,
// failures, answers by transport (without latencies) and counters.
func (s apiSummary) since(before apiSummary) apiSummary {
	minus := func(now, then map[string]int) map[string]int {
		out := map[string]int{}
		for k, n := range now {
			if d := n - then[k]; d != 0 {
				out[k] = d
			}
		}
		return out
	}
	d := apiSummary{Tasks: s.Tasks - before.Tasks, ByState: minus(s.ByState, before.ByState),
		FailuresByCode: minus(s.FailuresByCode, before.FailuresByCode), ByTransport: map[string]apiTransportSt{}}
	for k, st := range s.ByTransport {
		if n := st.Answered - before.ByTransport[k].Answered; n != 0 {
			d.ByTransport[k] = apiTransportSt{Answered: n}
		}
	}
	d.Counters.DuplicateResults = s.Counters.DuplicateResults - before.Counters.DuplicateResults
	d.Counters.UnknownResults = s.Counters.UnknownResults - before.Counters.UnknownResults
	d.Counters.RefusedCalls = s.Counters.RefusedCalls - before.Counters.RefusedCalls
	return d
}

// waitTasks polls the tasks of ids until cond holds for the whole list.
func (a *engineAPI) waitTasks(t *testing.T, d time.Duration, what string, ids []string, cond func([]apiTask) bool) []apiTask {
	t.Helper()
	var tasks []apiTask
	waitFor(t, d, what, func() (bool, string) {
		tasks = a.tasks(t, ids)
		return cond(tasks), describeTasks(tasks)
	})
	return tasks
}

// describeTasks counts tasks by state, executor and transport for messages.
func describeTasks(tasks []apiTask) string {
	counts := map[string]int{}
	for _, task := range tasks {
		counts[task.State+" on "+task.ExecutorID+" over "+task.Transport]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, counts[k]))
	}
	return strings.Join(parts, "; ")
}

// The example workloads and what their answers must be.

// taxSpec is a calculate-tax task of amount.
func taxSpec(amount float64) taskSpec {
	return taskSpec{ExecutorType: "calculate-tax", Context: map[string]any{"amount": amount}, TimeoutSeconds: 30}
}

// orderSpec is an order-validator task of orderID.
func orderSpec(orderID string) taskSpec {
	return taskSpec{ExecutorType: "order-validator", Context: map[string]any{"orderId": orderID}, TimeoutSeconds: 30}
}

// paymentSpec is a payment-processor task of amount for customer.
func paymentSpec(amount float64, customer string) taskSpec {
	return taskSpec{ExecutorType: "payment-processor", Context: map[string]any{"totalAmount": amount, "customerId": customer}, TimeoutSeconds: 30}
}

// notificationSpec is a notification-sender task to recipient.
func notificationSpec(recipient, message string) taskSpec {
	return taskSpec{ExecutorType: "notification-sender", Context: map[string]any{"recipient": recipient, "message": message}, TimeoutSeconds: 30}
}

// checkAnswer checks that a final task carries the answer its type gives
// to its input: COMPLETED with the right output for valid input, FAILED
// with the type's code for bad input. Numbers may arrive as strings over
// push (Gamelan's variables are strings), which the handlers parse.
func checkAnswer(t *testing.T, spec taskSpec, task apiTask) bool {
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
func checkAnswers(t *testing.T, specs []taskSpec, tasks []apiTask) {
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
func runsOf(tasks []apiTask) []string {
	runs := make([]string, len(tasks))
	for i, task := range tasks {
		runs[i] = task.RunID
	}
	return runs
}
