package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A client of the HTTP API of the reference engine (cmd/devengine), as the
// suites that run it as a process drive it: submit tasks, read them back,
// read the registry and the summary, cancel, and wait on any of these.

// EngineAPI is a client of the reference engine's HTTP API. Its calls fail
// the test on a transport error or an unexpected status, so that a test
// reads as the engine's answers only. It is safe for concurrent use.
type EngineAPI struct {
	base   string
	client *http.Client
}

// NewEngineAPI returns a client of the engine whose HTTP API listens on
// httpAddr (host:port). Every call is bounded, so that a frozen engine
// cannot hang a test.
func NewEngineAPI(httpAddr string) *EngineAPI {
	return &EngineAPI{base: "http://" + httpAddr, client: &http.Client{Timeout: 10 * time.Second}}
}

// TaskSpec is what POST /api/v1/tasks takes.
type TaskSpec struct {
	ExecutorType   string         `json:"executorType,omitempty"`
	NodeType       string         `json:"nodeType,omitempty"`
	Context        map[string]any `json:"context,omitempty"`
	TimeoutSeconds int            `json:"timeoutSeconds,omitempty"`
}

// EngineTask is a task as GET /api/v1/tasks/{id} shows it.
type EngineTask struct {
	TaskID       string        `json:"taskId"`
	RunID        string        `json:"runId"`
	NodeID       string        `json:"nodeId"`
	Attempt      int           `json:"attempt"`
	ExecutorType string        `json:"executorType"`
	State        string        `json:"state"`
	ExecutorID   string        `json:"executorId"`
	Transport    string        `json:"transport"`
	Deliveries   int           `json:"deliveries"`
	SubmittedAt  time.Time     `json:"submittedAt"`
	CompletedAt  time.Time     `json:"completedAt"`
	Result       *EngineResult `json:"result"`
}

// EngineResult is a task's recorded result.
type EngineResult struct {
	Status string         `json:"status"`
	Output map[string]any `json:"output"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Final reports whether the task has a result: it is neither waiting for
// an executor nor held by one.
func (task EngineTask) Final() bool { return task.State != "PENDING" && task.State != "ASSIGNED" }

// Key is the task's runId:nodeId:attempt, the key of Outcome's counts.
func (task EngineTask) Key() string {
	return fmt.Sprintf("%s:%s:%d", task.RunID, task.NodeID, task.Attempt)
}

// String names the task in messages.
func (task EngineTask) String() string {
	s := fmt.Sprintf("%s %s %s on %q over %q (%d deliveries)", task.TaskID, task.ExecutorType, task.State,
		task.ExecutorID, task.Transport, task.Deliveries)
	if task.Result != nil && task.Result.Error != nil {
		s += fmt.Sprintf(": %s %s", task.Result.Error.Code, task.Result.Error.Message)
	}
	return s
}

// EngineExecutor is an executor as GET /api/v1/executors shows it.
type EngineExecutor struct {
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

// EngineSummary is GET /api/v1/summary.
type EngineSummary struct {
	Tasks          int                             `json:"tasks"`
	ByState        map[string]int                  `json:"byState"`
	FailuresByCode map[string]int                  `json:"failuresByCode"`
	ByTransport    map[string]EngineTransportStats `json:"byTransport"`
	Counters       struct {
		DuplicateResults int64 `json:"duplicateResults"`
		UnknownResults   int64 `json:"unknownResults"`
		RefusedCalls     int64 `json:"refusedCalls"`
	} `json:"counters"`
}

// EngineTransportStats is one transport's line of the summary.
type EngineTransportStats struct {
	Answered int     `json:"answered"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
}

// Unfinished counts the tasks without a result.
func (s EngineSummary) Unfinished() int { return s.ByState["PENDING"] + s.ByState["ASSIGNED"] }

// Since returns the counts of s that came after before: tasks, states,
// failures, answers by transport (without latencies) and counters.
func (s EngineSummary) Since(before EngineSummary) EngineSummary {
	minus := func(now, then map[string]int) map[string]int {
		out := map[string]int{}
		for k, n := range now {
			if d := n - then[k]; d != 0 {
				out[k] = d
			}
		}
		return out
	}
	d := EngineSummary{Tasks: s.Tasks - before.Tasks, ByState: minus(s.ByState, before.ByState),
		FailuresByCode: minus(s.FailuresByCode, before.FailuresByCode), ByTransport: map[string]EngineTransportStats{}}
	for k, st := range s.ByTransport {
		if n := st.Answered - before.ByTransport[k].Answered; n != 0 {
			d.ByTransport[k] = EngineTransportStats{Answered: n}
		}
	}
	d.Counters.DuplicateResults = s.Counters.DuplicateResults - before.Counters.DuplicateResults
	d.Counters.UnknownResults = s.Counters.UnknownResults - before.Counters.UnknownResults
	d.Counters.RefusedCalls = s.Counters.RefusedCalls - before.Counters.RefusedCalls
	return d
}

// do makes one request with a JSON body (when not nil) and returns the
// status and the answer. Transport errors are returned, not fatal, so that
// do can run off the test's goroutine.
func (a *EngineAPI) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, reader)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, raw, nil
}

// call makes one request, fails t unless the engine answers want, and
// decodes the answer into out (when not nil).
func (a *EngineAPI) call(t testing.TB, method, path string, body any, want int, out any) {
	t.Helper()
	status, raw, err := a.do(t.Context(), method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Fatalf("%s %s answered %d, want %d: %s", method, path, status, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s answered %s: %v", method, path, raw, err)
		}
	}
}

// Submit submits a task and returns it as the engine took it (201, with
// an id).
func (a *EngineAPI) Submit(t testing.TB, spec TaskSpec) EngineTask {
	t.Helper()
	var task EngineTask
	a.call(t, http.MethodPost, "/api/v1/tasks", spec, http.StatusCreated, &task)
	if task.TaskID == "" {
		t.Fatalf("submit %+v: no task id", spec)
	}
	return task
}

// SubmitAll submits every spec and returns the task ids in order.
func (a *EngineAPI) SubmitAll(t testing.TB, specs []TaskSpec) []string {
	t.Helper()
	ids := make([]string, len(specs))
	for i, spec := range specs {
		ids[i] = a.Submit(t, spec).TaskID
	}
	return ids
}

// Task reads one task.
func (a *EngineAPI) Task(t testing.TB, id string) EngineTask {
	t.Helper()
	var task EngineTask
	a.call(t, http.MethodGet, "/api/v1/tasks/"+id, nil, http.StatusOK, &task)
	return task
}

// Tasks reads the tasks of ids, in order.
//
// The tasks are read 16 at a time, so that the answer is close to one
// moment's picture: read one by one, hundreds of tasks of a second each
// would have changed hands by the time the last is read.
func (a *EngineAPI) Tasks(t testing.TB, ids []string) []EngineTask {
	t.Helper()
	out := make([]EngineTask, len(ids))
	errs := make([]error, len(ids))
	var readers sync.WaitGroup
	room := make(chan struct{}, 16)
	for i, id := range ids {
		room <- struct{}{}
		readers.Go(func() {
			defer func() { <-room }()
			path := "/api/v1/tasks/" + id
			status, raw, err := a.do(t.Context(), http.MethodGet, path, nil)
			switch {
			case err != nil:
				errs[i] = err
			case status != http.StatusOK:
				errs[i] = fmt.Errorf("GET %s answered %d: %s", path, status, raw)
			default:
				errs[i] = json.Unmarshal(raw, &out[i])
			}
		})
	}
	readers.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

// Executors lists the registry.
func (a *EngineAPI) Executors(t testing.TB) []EngineExecutor {
	t.Helper()
	var list []EngineExecutor
	a.call(t, http.MethodGet, "/api/v1/executors", nil, http.StatusOK, &list)
	return list
}

// Executor returns the registry's entry of id, or false.
func (a *EngineAPI) Executor(t testing.TB, id string) (EngineExecutor, bool) {
	t.Helper()
	for _, e := range a.Executors(t) {
		if e.ExecutorID == id {
			return e, true
		}
	}
	return EngineExecutor{}, false
}

// Summary reads the summary.
func (a *EngineAPI) Summary(t testing.TB) EngineSummary {
	t.Helper()
	var s EngineSummary
	a.call(t, http.MethodGet, "/api/v1/summary", nil, http.StatusOK, &s)
	return s
}

// Cancel asks the engine to cancel a task and returns the status code
// (202 accepted, 409 already final): the caller asserts which it expects.
func (a *EngineAPI) Cancel(t testing.TB, id string) int {
	t.Helper()
	status, _, err := a.do(t.Context(), http.MethodPost, "/api/v1/tasks/"+id+"/cancel", nil)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// WaitExecutors waits up to d until the engine lists every id as healthy.
func (a *EngineAPI) WaitExecutors(t testing.TB, d time.Duration, ids ...string) {
	t.Helper()
	WaitFor(t, d, fmt.Sprintf("executors %v registered and healthy", ids), func() (bool, string) {
		healthy := map[string]bool{}
		for _, e := range a.Executors(t) {
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

// WaitAllFinal waits up to d until the engine holds n tasks, every one
// final, and returns the summary.
func (a *EngineAPI) WaitAllFinal(t testing.TB, d time.Duration, n int) EngineSummary {
	t.Helper()
	var s EngineSummary
	WaitFor(t, d, fmt.Sprintf("all %d tasks answered", n), func() (bool, string) {
		s = a.Summary(t)
		return s.Tasks == n && s.Unfinished() == 0, fmt.Sprintf("%d tasks by state %v", s.Tasks, s.ByState)
	})
	return s
}

// WaitTasks polls the tasks of ids, up to d, until cond holds for the
// whole list, and returns them.
func (a *EngineAPI) WaitTasks(t testing.TB, d time.Duration, what string, ids []string, cond func([]EngineTask) bool) []EngineTask {
	t.Helper()
	var tasks []EngineTask
	WaitFor(t, d, what, func() (bool, string) {
		tasks = a.Tasks(t, ids)
		return cond(tasks), DescribeTasks(tasks)
	})
	return tasks
}

// AwaitTransport submits probe tasks of spec, one at a time, for up to d,
// until one is delivered over transport, and returns the summary then;
// each probe may take up to answer to be answered. An executor pulling
// over a stream is ready once the stream is open on its side; the engine
// takes the stream a moment later and meanwhile delivers over push, which
// is always on. Probes that fail or take another transport fail nothing.
func (a *EngineAPI) AwaitTransport(t testing.TB, d, answer time.Duration, spec TaskSpec, transport string) EngineSummary {
	t.Helper()
	WaitFor(t, d, "a task delivered over "+transport, func() (bool, string) {
		probe := a.Submit(t, spec)
		answered := a.WaitTasks(t, answer, "a probe answered", []string{probe.TaskID}, func(tasks []EngineTask) bool { return tasks[0].Final() })
		return answered[0].Transport == transport, answered[0].String()
	})
	return a.Summary(t)
}

// DescribeTasks counts tasks by state, executor and transport, for
// messages.
func DescribeTasks(tasks []EngineTask) string {
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

// WaitFor polls cond every 20ms until it holds, failing t after d with
// what cond last described, or when the test ends first.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
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
			t.Fatalf("%s: the test ended", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
