// Package interop runs the executor service against an engine written on
// another gRPC stack: engine.py, on Python grpcio (gRPC C-core), with its
// default server options, and so its default keepalive policy. The Gamelan
// engine is Java (grpc-java), whose defaults are as strict; every other
// test of the project talks Go to Go.
//
// The default run covers, in the push, stream and bidi intakes: basic work,
// a large task and result, and engine restarts (slow, graceful, and faster
// than a heartbeat interval), each followed by a registration with the new
// engine within seconds; and a control showing that the suite sees a
// GOAWAY when pings are too frequent. With GAMELAN_INTEROP_LONG=1 (make
// test-interop, run by CI) it also idles longer than twice the keepalive
// interval, with and without heartbeats on the connection, and checks that
// the engine never closed the connection, readiness never flapped, and work
// goes on.
package interop

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/test/testkit"
)

// The executor ids of the service started by executorEnv.
const (
	taxID          = "executor-calculate-tax-interop"
	notificationID = "executor-notification-sender-interop"
)

var modes = []string{"push", "stream", "bidi"}

// executorEnv configures the service against engine in intake mode, with
// every gRPC setting at its default.
func executorEnv(engine *pythonEngine, mode string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":          "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":          "0",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET": engine.grpcAddr,
		"GAMELAN_EXECUTOR_GRPC_INTAKE":        mode,
		"GAMELAN_EXECUTOR_ENABLED_TYPES":      "calculate-tax,notification-sender",
		"GAMELAN_EXECUTOR_INSTANCE_ID":        "interop",
		"GAMELAN_EXECUTOR_LOG_LEVEL":          "info",
	}
}

// executor is the service running in the test's process.
type executor struct {
	baseURL string
	logs    *testkit.SyncBuffer
}

// startExecutor runs the service with vars until the test ends, and waits
// until it is ready.
func startExecutor(t *testing.T, vars map[string]string) *executor {
	t.Helper()
	vars = maps.Clone(vars)
	ctx, cancel := context.WithCancel(context.Background())
	e := &executor{logs: &testkit.SyncBuffer{}}
	done := make(chan error, 1)
	go func() {
		done <- service.RunHosting(ctx, nil, func(k string) string { return vars[k] }, e.logs, io.Discard, examples.All(examples.Config{}))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "the service stopped with an error")
		case <-time.After(60 * time.Second):
			t.Error("the service did not stop")
		}
	})
	require.Eventually(t, func() bool {
		_, addr, ok := strings.Cut(e.logs.String(), `"msg":"http server listening","addr":"`)
		if ok {
			e.baseURL = "http://" + addr[:strings.IndexByte(addr, '"')]
		}
		return ok
	}, 20*time.Second, 5*time.Millisecond, "the service did not start:\n%s", e.logs)
	e.waitReady(t, 20*time.Second)
	return e
}

// readiness returns the status of /q/health/ready (0 when unreachable).
func (e *executor) readiness() int {
	resp, err := http.Get(e.baseURL + "/q/health/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (e *executor) waitReady(t *testing.T, d time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return e.readiness() == http.StatusOK }, d, 5*time.Millisecond,
		"the service is not ready; logs:\n%s", e.logs)
}

// goaways returns the GOAWAY and reconnection lines of the service's log.
func (e *executor) goaways() []string {
	var lines []string
	for _, line := range strings.Split(e.logs.String(), "\n") {
		lower := strings.ToLower(line)
		if strings.Contains(lower, "goaway") || strings.Contains(lower, "too_many_pings") || strings.Contains(lower, "too many pings") ||
			strings.Contains(lower, "connection to the engine remade") {
			lines = append(lines, line)
		}
	}
	return lines
}

// taxTask is the i-th calculate-tax task of run.
func taxTask(run string, i int) task {
	node := fmt.Sprintf("tax-%03d", i)
	return task{TaskID: run + "-" + node, RunID: run, NodeID: node, Attempt: 1, NodeType: "calculate-tax",
		ExecutionToken: "token-" + node, Context: map[string]any{"amount": float64(100 + i)}}
}

// send hands tasks to the executor as the engine does in mode: pushed to
// its endpoint, or queued for its stream.
func send(t *testing.T, engine *pythonEngine, mode, executorID string, tasks ...task) {
	t.Helper()
	if mode != "push" {
		engine.enqueue(t, executorID, tasks...)
		return
	}
	endpoint := engine.state(t).Registrations[executorID].Endpoint
	for _, tk := range tasks {
		variables := make(map[string]string, len(tk.Context))
		for k, v := range tk.Context {
			variables[k] = fmt.Sprint(v) // Gamelan pushes variables as text
		}
		a := engine.push(t, endpoint, executorID, tk, variables)
		require.True(t, a.Accepted, "push %s: %+v", tk.NodeID, a)
	}
}

// requireCompleted waits until every task has a COMPLETED result.
func requireCompleted(t *testing.T, engine *pythonEngine, d time.Duration, tasks ...task) engineState {
	t.Helper()
	want := make(map[string]bool, len(tasks))
	for _, tk := range tasks {
		want[tk.RunID+":"+tk.NodeID] = true
	}
	return engine.waitFor(t, d, fmt.Sprintf("%d results", len(tasks)), func(s engineState) bool {
		done := 0
		for _, r := range s.Results {
			if want[r.RunID+":"+r.NodeID] {
				require.Equal(t, "TASK_STATUS_COMPLETED", r.Status, "%s: %+v", r.NodeID, r.Error)
				done++
			}
		}
		return done >= len(tasks)
	})
}

// startBoth starts engine.py and the service against it in mode, and
// waits until the engine knows both executor types.
func startBoth(t *testing.T, mode string) (*pythonEngine, *executor, engineState) {
	t.Helper()
	engine := startPythonEngine(t)
	exec := startExecutor(t, executorEnv(engine, mode))
	s := engine.waitFor(t, 10*time.Second, "registrations", func(s engineState) bool {
		return s.Registrations[taxID].Endpoint != "" && s.Registrations[notificationID].Endpoint != ""
	})
	return engine, exec, s
}

func TestInteropBasicWork(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			engine, _, s := startBoth(t, mode)
			assert.Equal(t, "calculate-tax", s.Registrations[taxID].Type)
			var tasks []task
			for i := range 20 {
				tasks = append(tasks, taxTask("run-basic-"+mode, i))
			}
			send(t, engine, mode, taxID, tasks...)
			requireCompleted(t, engine, 20*time.Second, tasks...)
		})
	}
}

// A 3 MB task and its 3 MB result (notification-sender echoes its
// recipient) cross C-core's default 4 MB limit's side of the wire intact.
func TestInteropLargeTaskAndResult(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			engine, _, _ := startBoth(t, mode)
			big := task{TaskID: "big", RunID: "run-large-" + mode, NodeID: "big", Attempt: 1, NodeType: "notification-sender",
				ExecutionToken: "token-big", Context: map[string]any{"recipient": strings.Repeat("r", 3<<20), "message": "hello"}}
			send(t, engine, mode, notificationID, big)
			s := requireCompleted(t, engine, 30*time.Second, big)
			for _, r := range s.Results {
				if r.NodeID == "big" {
					assert.Greater(t, r.OutputBytes, 3<<20, "the result's output arrived whole")
				}
			}
		})
	}
}

// An engine restart: slow (down for seconds), graceful (the server lets
// its calls finish), and faster than a heartbeat interval (down for no
// time, between two heartbeats, which Gamelan answers with success for
// executors it does not know). The executor must register with the new
// engine within seconds each time, because the connection was remade, and
// its work must go on.
func TestInteropEngineRestart(t *testing.T) {
	restarts := []struct {
		name        string
		grace, down float64
	}{
		{"slow", 0, 3},
		{"graceful", 2, 0},
		{"faster than a heartbeat", 0, 0},
	}
	for _, mode := range modes {
		for _, r := range restarts {
			t.Run(mode+"/"+r.name, func(t *testing.T) {
				t.Parallel()
				engine, exec, _ := startBoth(t, mode)
				send(t, engine, mode, taxID, taxTask("run-before", 0))
				requireCompleted(t, engine, 20*time.Second, taxTask("run-before", 0))

				began := time.Now()
				engine.restart(t, r.grace, r.down)
				back := time.Now()
				s := engine.waitFor(t, 15*time.Second, "a registration with the restarted engine", func(s engineState) bool {
					return s.Registrations[taxID].Endpoint != "" && s.Registrations[notificationID].Endpoint != ""
				})
				registered := time.Since(back)
				t.Logf("%s, %s restart (%s down): registered with the new engine %s after it came back, %d heartbeats received meanwhile",
					mode, r.name, back.Sub(began).Round(time.Millisecond), registered.Round(time.Millisecond), s.Heartbeats[taxID])
				assert.Less(t, registered, 5*time.Second, "re-registration after the restart")
				exec.waitReady(t, 10*time.Second)

				tasks := []task{taxTask("run-after", 0), taxTask("run-after", 1)}
				send(t, engine, mode, taxID, tasks...)
				requireCompleted(t, engine, 20*time.Second, tasks...)
			})
		}
	}
}

// The control of the idle scenarios: pinging every 10 s, with a stream open
// and no other traffic, is more than a default C-core server permits, and
// it closes the connection (GOAWAY too_many_pings) within a minute. So the
// suite does see a GOAWAY when there is one.
func TestInteropSeesTheGOAWAYOfTooFrequentPings(t *testing.T) {
	if testing.Short() {
		t.Skip("takes up to a minute")
	}
	t.Parallel()
	engine := startPythonEngine(t)
	vars := executorEnv(engine, "stream")
	vars["GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIME_SECONDS"] = "10"
	vars["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "300" // no calls but the idle stream
	vars["GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS"] = "600"
	vars["GAMELAN_EXECUTOR_REREGISTER_INTERVAL_SECONDS"] = "0"
	exec := startExecutor(t, vars)
	require.Eventually(t, func() bool {
		return strings.Contains(exec.logs.String(), `"msg":"the engine closed the connection (GOAWAY)"`) &&
			strings.Contains(exec.logs.String(), "too_many_pings")
	}, 90*time.Second, 100*time.Millisecond, "no GOAWAY although the executor pinged every 10 s; logs:\n%s", exec.logs)
	t.Logf("GOAWAY seen: %s", exec.goaways()[0])
}

// idleFor is how long the idle scenarios stay idle: longer than twice the
// default keepalive interval.
const idleFor = 2*5*time.Minute + 45*time.Second

// idleDuration is idleFor, or GAMELAN_INTEROP_IDLE (a Go duration) to try
// the scenarios' other steps quickly.
func idleDuration(t *testing.T) time.Duration {
	if v := os.Getenv("GAMELAN_INTEROP_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "GAMELAN_INTEROP_IDLE")
		return d
	}
	return idleFor
}

// With GAMELAN_INTEROP_LONG=1: idle longer than twice the keepalive, with
// heartbeats on the connection (the gRPC registrar) and without any other
// call on it (heartbeats sent to a REST registry instead, and, in stream and
// bidi, only the idle stream open). The engine must never close the
// connection (no GOAWAY, no reconnection, streams never reopened), the
// service must stay ready the whole time, and work must go on after.
func TestInteropIdleLongerThanTwiceTheKeepalive(t *testing.T) {
	if os.Getenv("GAMELAN_INTEROP_LONG") != "1" {
		t.Skipf("idles for %s: set GAMELAN_INTEROP_LONG=1 (make test-interop) to run it", idleFor)
	}
	for _, mode := range modes {
		for _, registrar := range []string{"grpc", "http"} {
			t.Run(mode+"/"+registrar, func(t *testing.T) {
				t.Parallel()
				engine := startPythonEngine(t)
				vars := executorEnv(engine, mode)
				var registry *resttest.Registry
				if registrar == "http" {
					registry = resttest.Start(t)
					vars["GAMELAN_EXECUTOR_REGISTRAR"] = "rest"
					vars["GAMELAN_EXECUTOR_ENGINE_URL"] = registry.URL()
				}
				exec := startExecutor(t, vars)
				first := []task{taxTask("run-idle-"+mode+"-"+registrar, 0)}
				sendIdle(t, engine, registry, mode, first...)
				requireCompleted(t, engine, 20*time.Second, first...)
				opens := engine.state(t).StreamOpens[taxID]

				deadline := time.Now().Add(idleDuration(t))
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for time.Now().Before(deadline) {
					require.Equal(t, http.StatusOK, exec.readiness(), "readiness flapped while idle; logs:\n%s", exec.logs)
					<-tick.C
				}
				assert.Empty(t, exec.goaways(), "the engine closed the connection while idle")
				assert.Equal(t, opens, engine.state(t).StreamOpens[taxID], "a stream was reopened while idle")

				after := []task{taxTask("run-idle-"+mode+"-"+registrar, 1)}
				sendIdle(t, engine, registry, mode, after...)
				requireCompleted(t, engine, 20*time.Second, after...)
			})
		}
	}
}

// sendIdle is send, with the push endpoint taken from the REST registry
// when the registrations went there (registry not nil).
func sendIdle(t *testing.T, engine *pythonEngine, registry *resttest.Registry, mode string, tasks ...task) {
	t.Helper()
	if mode != "push" || registry == nil {
		send(t, engine, mode, taxID, tasks...)
		return
	}
	info, ok := registry.Executor(taxID)
	require.True(t, ok, "%s is not in the REST registry", taxID)
	for _, tk := range tasks {
		a := engine.push(t, info.Endpoint, taxID, tk, map[string]string{"amount": strconv.Itoa(int(tk.Context["amount"].(float64)))})
		require.True(t, a.Accepted, "push %s: %+v", tk.NodeID, a)
	}
}
