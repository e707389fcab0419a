package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// The reference engine (cmd/devengine) as a process, and the part of its
// HTTP API the crash scenarios use.

// devEngine is a reference engine process and its addresses.
type devEngine struct {
	*testkit.Process
	httpAddr, grpcAddr, kafkaAddr string
	client                        *http.Client
}

// startDevEngine runs the reference engine on free ports of 127.0.0.1 with
// vars (DEVENGINE_*) and PATH as its environment, and waits until it
// listens. Ports taken by another process between their pick and the
// engine's bind are picked again.
func startDevEngine(t *testing.T, vars map[string]string) *devEngine {
	t.Helper()
	env := map[string]string{"PATH": os.Getenv("PATH")}
	for k, v := range vars {
		env[k] = v
	}
	for attempt := 1; ; attempt++ {
		e := &devEngine{httpAddr: testkit.FreeAddr(t), grpcAddr: testkit.FreeAddr(t), kafkaAddr: testkit.FreeAddr(t),
			client: &http.Client{Timeout: 10 * time.Second}}
		cmd := testkit.Command(devengineBinary(t), env, "-http", e.httpAddr, "-grpc", e.grpcAddr, "-kafka", e.kafkaAddr)
		e.Process = testkit.Start(t, "devengine", cmd)
		listening := false
		e.WaitForOutput(t, startTimeout, "that it listens, or that a port was taken", func() bool {
			listening = len(e.LinesContaining("reference engine listening")) > 0
			select {
			case <-e.Exited():
				return true
			default:
				return listening
			}
		})
		if listening {
			return e
		}
		require.Contains(t, e.Stderr(), "address already in use", "the engine exited before listening")
		require.Less(t, attempt, 3, "the engine could not listen: %s", e.Stderr())
	}
}

// apiTask is a task as the engine's API shows it.
type apiTask struct {
	TaskID      string    `json:"taskId"`
	RunID       string    `json:"runId"`
	NodeID      string    `json:"nodeId"`
	Attempt     int       `json:"attempt"`
	State       string    `json:"state"`
	ExecutorID  string    `json:"executorId"`
	Transport   string    `json:"transport"`
	Deliveries  int       `json:"deliveries"`
	CompletedAt time.Time `json:"completedAt"`
	Result      *struct {
		Status string         `json:"status"`
		Output map[string]any `json:"output"`
		Error  *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"result"`
}

// key is the task's runId:nodeId:attempt.
func (task apiTask) key() string {
	return fmt.Sprintf("%s:%s:%d", task.RunID, task.NodeID, task.Attempt)
}

// apiExecutor is an executor as the engine's registry shows it.
type apiExecutor struct {
	ExecutorID    string `json:"executorId"`
	Healthy       bool   `json:"healthy"`
	AssignedTasks int    `json:"assignedTasks"`
}

// apiSummary is the engine's summary.
type apiSummary struct {
	Tasks    int            `json:"tasks"`
	ByState  map[string]int `json:"byState"`
	Counters struct {
		DuplicateResults int64 `json:"duplicateResults"`
	} `json:"counters"`
}

// unfinished counts the tasks without a result.
func (s apiSummary) unfinished() int { return s.ByState["PENDING"] + s.ByState["ASSIGNED"] }

// call makes one API request, decoding a JSON answer into out, and fails t
// unless the status is want.
func (e *devEngine) call(t *testing.T, method, path string, body any, want int, out any) {
	t.Helper()
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		require.NoError(t, err)
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+e.httpAddr+path, reader)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, want, resp.StatusCode, "%s %s answered %s", method, path, raw)
	if out != nil {
		require.NoError(t, json.Unmarshal(raw, out), "%s %s answered %s", method, path, raw)
	}
}

// submitPayment submits a payment-processor task and returns it.
func (e *devEngine) submitPayment(t *testing.T, amount float64, customer string) apiTask {
	t.Helper()
	var task apiTask
	e.call(t, http.MethodPost, "/api/v1/tasks", map[string]any{
		"executorType": "payment-processor", "timeoutSeconds": 60,
		"context": map[string]any{"totalAmount": amount, "customerId": customer},
	}, http.StatusCreated, &task)
	require.NotEmpty(t, task.TaskID)
	return task
}

// tasks reads the tasks of ids, in order.
//
// The tasks are read 16 at a time, so that the answer is close to one
// moment's picture: read one by one, 600 tasks of a second each would have
// changed hands by the time the last is read.
func (e *devEngine) tasks(t *testing.T, ids []string) []apiTask {
	t.Helper()
	out := make([]apiTask, len(ids))
	errs := make([]error, len(ids))
	var readers sync.WaitGroup
	room := make(chan struct{}, 16)
	for i, id := range ids {
		room <- struct{}{}
		readers.Go(func() {
			defer func() { <-room }()
			errs[i] = e.get(t.Context(), "/api/v1/tasks/"+id, &out[i])
		})
	}
	readers.Wait()
	require.NoError(t, errors.Join(errs...))
	return out
}

// get GETs path and decodes its 200 answer into out.
func (e *devEngine) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.httpAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %d: %s", path, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

// executor returns the registry's entry of id, or false.
func (e *devEngine) executor(t *testing.T, id string) (apiExecutor, bool) {
	t.Helper()
	var list []apiExecutor
	e.call(t, http.MethodGet, "/api/v1/executors", nil, http.StatusOK, &list)
	for _, x := range list {
		if x.ExecutorID == id {
			return x, true
		}
	}
	return apiExecutor{}, false
}

// summary reads the summary.
func (e *devEngine) summary(t *testing.T) apiSummary {
	t.Helper()
	var s apiSummary
	e.call(t, http.MethodGet, "/api/v1/summary", nil, http.StatusOK, &s)
	return s
}

// waitFor polls cond every 20ms until it holds, failing after d with what
// cond last described.
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
			t.Fatalf("%s: the test ended", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitHealthy waits until the engine lists every id as healthy.
func (e *devEngine) waitHealthy(t *testing.T, ids ...string) {
	t.Helper()
	waitFor(t, startTimeout, fmt.Sprintf("executors %v healthy", ids), func() (bool, string) {
		var missing []string
		for _, id := range ids {
			if x, ok := e.executor(t, id); !ok || !x.Healthy {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0, "not healthy: " + strings.Join(missing, ", ")
	})
}

// waitAllFinal waits until the engine holds n tasks, every one answered,
// and returns the summary.
func (e *devEngine) waitAllFinal(t *testing.T, n int) apiSummary {
	t.Helper()
	var s apiSummary
	waitFor(t, answerTimeout, fmt.Sprintf("all %d tasks answered", n), func() (bool, string) {
		s = e.summary(t)
		return s.Tasks == n && s.unfinished() == 0, fmt.Sprintf("%d tasks by state %v", s.Tasks, s.ByState)
	})
	return s
}
