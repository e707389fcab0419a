// Package handlers holds the fault scenarios of issue 14 about handlers and
// load: handlers that misbehave (too slow, panicking, deaf to their
// context, never returning) beside a well-behaved type, and overload at
// twice the service's capacity on the push and the pull intake. Each runs
// the real service in-process through service.RunHosting, hosting executor
// types the test defines, against the grpctest engine on 127.0.0.1, and
// counts its tasks with testkit.Outcome.
package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/test/testkit"
)

// waitLimit bounds every wait for a condition: generous, because the
// machine running these tests may be shared and slow. tick is how often a
// polled condition is checked.
const waitLimit, tick = 30 * time.Second, 10 * time.Millisecond

// Drain and flush deadlines of every service these scenarios start, and the
// whole stop the README promises with them: the drain, plus the flush,
// plus about 10 s for unregistering and closing ("give the process a grace
// period of at least SHUTDOWN_TIMEOUT_SECONDS + RESULT_FLUSH_TIMEOUT_SECONDS
// + 15 seconds").
const (
	drainSeconds = 2
	flushSeconds = 2
	stopGrace    = (drainSeconds + flushSeconds + 15) * time.Second
)

// instanceID is the INSTANCE_ID of every service: executor ids are
// executor-TYPE-test.
const instanceID = "test"

// executorID is the id the service registers typ under.
func executorID(typ string) string { return "executor-" + typ + "-" + instanceID }

// serviceEnv is the environment of a service serving gRPC types through
// intake ("push", "stream" or "bidi") against the engine at engineAddr,
// with workers handlers at once and queue admitted tasks waiting.
func serviceEnv(engineAddr, intake string, workers, queue int) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":                    "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                    "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":                    "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":                    "0",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET":           engineAddr,
		"GAMELAN_EXECUTOR_GRPC_INTAKE":                  intake,
		"GAMELAN_EXECUTOR_INSTANCE_ID":                  instanceID,
		"GAMELAN_EXECUTOR_LOG_LEVEL":                    "info", // successes are logged at debug: quiet under load
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE":             strconv.Itoa(workers),
		"GAMELAN_EXECUTOR_QUEUE_SIZE":                   strconv.Itoa(queue),
		"GAMELAN_EXECUTOR_TASK_TIMEOUT_SECONDS":         "30",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS":     strconv.Itoa(drainSeconds),
		"GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS": strconv.Itoa(flushSeconds),
	}
}

// logLines records the service's JSON log lines.
type logLines struct {
	mu      sync.Mutex
	partial bytes.Buffer
	raw     []string
	lines   []map[string]any
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

// Write takes the service's stdout: complete lines are kept, decoded when
// they are JSON.
func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial.Write(p)
	for {
		line, err := l.partial.ReadString('\n')
		if err != nil {
			l.partial.Reset()
			l.partial.WriteString(line) // the start of a line still being written
			break
		}
		l.raw = append(l.raw, line)
		var fields map[string]any
		if json.Unmarshal([]byte(line), &fields) == nil {
			l.lines = append(l.lines, fields)
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// with returns the decoded lines whose msg is msg.
func (l *logLines) with(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []map[string]any
	for _, line := range l.lines {
		if line["msg"] == msg {
			found = append(found, line)
		}
	}
	return found
}

// rawLines returns every line written, decoded or not.
func (l *logLines) rawLines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.raw...)
}

// waitFor returns the first line whose msg is msg, failing t after waitLimit.
func (l *logLines) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if found := l.with(msg); len(found) > 0 {
			return found[0]
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line %q; the log:\n%s", msg, strings.Join(l.rawLines(), ""))
		}
	}
}

// runningService is a service a test started.
type runningService struct {
	engine  *grpctest.Engine
	logs    *logLines
	baseURL string // its probes and metrics
	cancel  context.CancelFunc
	done    chan error
}

// startService runs the real service through service.RunHosting with vars
// as its whole environment, hosting hosted, and waits until its HTTP server
// listens. The service is stopped when the test ends, if the test has not
// stopped it.
func startService(t *testing.T, engine *grpctest.Engine, vars map[string]string, hosted ...executor.Executor) *runningService {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &runningService{engine: engine, logs: newLogLines(), cancel: cancel, done: make(chan error, 1)}
	go func() {
		s.done <- service.RunHosting(ctx, nil, func(k string) string { return vars[k] }, s.logs, io.Discard, hosted)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(stopGrace + waitLimit):
			t.Error("the service did not stop")
		}
	})
	listening := s.logs.waitFor(t, "http server listening")
	s.baseURL = "http://" + listening["addr"].(string)
	return s
}

// waitServing waits until every type is registered with the engine, the
// stream of each is open when the intake pulls, and the service is ready.
func (s *runningService) waitServing(t *testing.T, pulls bool, types ...string) {
	t.Helper()
	for _, typ := range types {
		id := executorID(typ)
		require.Eventually(t, func() bool {
			_, ok := s.engine.Registration(id)
			return ok && (!pulls || s.engine.OpenStreams(id) > 0)
		}, waitLimit, tick, "%s never registered (or its stream never opened)", id)
	}
	require.Eventually(t, func() bool { return s.status("/q/health/ready") == http.StatusOK },
		waitLimit, tick, "the service never became ready")
}

// status GETs a probe and returns its HTTP status, 0 when the call failed.
func (s *runningService) status(path string) int {
	resp, err := http.Get(s.baseURL + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// stop cancels the service's context, as SIGTERM does in main, and returns
// how long Run took to return, and what it returned.
func (s *runningService) stop(t *testing.T) (time.Duration, error) {
	t.Helper()
	began := time.Now()
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return time.Since(began), err
	case <-time.After(stopGrace + waitLimit):
		t.Fatalf("the service did not stop within %s", stopGrace+waitLimit)
		return 0, nil
	}
}

// exited reports whether the service's Run has returned (a crash, or a
// stop the test did not ask for).
func (s *runningService) exited() bool { return len(s.done) > 0 }

// metrics scrapes /q/metrics and returns every sample by its series, the
// name with its labels as the exposition format writes them:
// `gamelan_executor_tasks_running{executor_type="deaf"}`.
func (s *runningService) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	samples, err := s.scrape()
	require.NoError(t, err)
	return samples
}

// scrape is metrics for a goroutine other than the test's: it reports an
// error instead of failing the test.
func (s *runningService) scrape() (map[string]float64, error) {
	resp, err := http.Get(s.baseURL + "/q/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	samples := make(map[string]float64)
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cut := strings.LastIndexByte(line, ' ')
		if cut < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[cut+1:], 64); err == nil {
			samples[line[:cut]] = v
		}
	}
	return samples, scanner.Err()
}

// The series these scenarios read.
const admittedSeries = "gamelan_executor_tasks_admitted"

func runningSeries(typ string) string {
	return `gamelan_executor_tasks_running{executor_type="` + typ + `"}`
}

func abandonedSeries(typ string) string {
	return `gamelan_executor_handlers_abandoned_total{executor_type="` + typ + `"}`
}

// key is the engine's key of the first attempt of run's node:
// "runId:nodeId:attempt".
func key(run, node string) string { return run + ":" + node + ":1" }

// resultKey is the key a result answers.
func resultKey(res *gamelanv1.TaskResult) string {
	return res.GetRunId() + ":" + res.GetNodeId() + ":" + strconv.Itoa(int(res.GetAttempt()))
}

// streamTask is a task of type typ for the StreamTasks intake, with a
// timeout in seconds (0: the service's default) and the given context.
func streamTask(t *testing.T, run, node, typ string, timeoutSeconds int64, vars map[string]any) *gamelanv1.ExecutionTask {
	t.Helper()
	if vars == nil {
		vars = map[string]any{}
	}
	ctx, err := structpb.NewStruct(vars)
	require.NoError(t, err)
	return &gamelanv1.ExecutionTask{
		TaskId: "task-" + run + "-" + node, RunId: run, NodeId: node, NodeType: typ, Attempt: 1,
		ExecutionToken: "token-" + node, Context: ctx, TimeoutSeconds: timeoutSeconds,
	}
}

// waitResults waits until the engine holds a result for every key and
// returns them by key.
func waitResults(t *testing.T, engine *grpctest.Engine, keys []string) map[string]*gamelanv1.TaskResult {
	t.Helper()
	var unique map[string]*gamelanv1.TaskResult
	missing := func() []string {
		unique = engine.UniqueResults()
		var m []string
		for _, k := range keys {
			if unique[k] == nil {
				m = append(m, k)
			}
		}
		return m
	}
	require.Eventually(t, func() bool { return len(missing()) == 0 }, waitLimit, tick, "results missing")
	return unique
}

// countAnswers records in o every result the engine received, duplicates
// included, so that Check sees lost and duplicated tasks alike.
func countAnswers(o *testkit.Outcome, engine *grpctest.Engine) {
	for _, res := range engine.Results() {
		o.Answer(resultKey(res))
	}
}

// retryable reads the retryable flag a gRPC result carries in its error's
// context (docs/protocol.md, 3.4).
func retryable(res *gamelanv1.TaskResult) bool {
	flag, _ := res.GetError().GetContext().AsMap()["retryable"].(bool)
	return flag
}

// rate is n tasks per elapsed second.
func rate(n int, elapsed time.Duration) float64 { return float64(n) / elapsed.Seconds() }

// round2 keeps two decimals of a figure for the notes.
func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
