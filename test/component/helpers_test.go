// Package component starts the executor service through service.Run and
// service.RunWithPorts, the way main does, and drives it through in-memory
// ports and its real HTTP probes on 127.0.0.1.
package component

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/pkg/executor"
)

// logLines collects the service's JSON log lines and lets a test wait for one.
type logLines struct {
	mu      sync.Mutex
	partial bytes.Buffer
	lines   []map[string]any
	raw     []string
	changed chan struct{}
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial.Write(p)
	for {
		line, err := l.partial.ReadString('\n')
		if err != nil {
			l.partial.Reset()
			l.partial.WriteString(line)
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

// waitFor returns the first line whose msg is msg, waiting up to 10s.
func (l *logLines) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			if line["msg"] == msg {
				l.mu.Unlock()
				return line
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no log line %q; got:\n%s", msg, l.text())
		}
	}
}

func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "")
}

// fixtures are the executor types the component tests drive: the examples
// (executors/examples), whatever the service's own list (executors.Hosted)
// holds, so that a fork adding or removing types leaves these tests green.
// The payment-processor's gateway delay comes from the test's
// PAYMENT_GATEWAY_DELAY, as the service's own list takes it.
func fixtures(vars map[string]string) []executor.Executor {
	delay, err := time.ParseDuration(vars["PAYMENT_GATEWAY_DELAY"])
	if err != nil {
		delay = 0
	}
	return examples.All(examples.Config{PaymentGatewayDelay: delay})
}

// runFixtures is service.RunHosting with the fixtures: the service as main
// runs it, hosting the test's executor types.
func runFixtures(ctx context.Context, args []string, vars map[string]string, stdout, stderr io.Writer) error {
	return service.RunHosting(ctx, args, env(vars), stdout, stderr, fixtures(vars))
}

// env returns a getenv over the given variables only.
func env(vars map[string]string) func(string) string {
	return func(key string) string { return vars[key] }
}

// baseEnv is a quiet, loopback-only configuration for tests.
func baseEnv() map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                "debug",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "10",
		"PAYMENT_GATEWAY_DELAY":                     "0s",
	}
}

// running is a service started by a test.
type running struct {
	engine  *memory.Backend
	logs    *logLines
	baseURL string
	cancel  context.CancelFunc
	done    chan error
}

// startWithEngine runs the service with every port backed by one in-memory
// engine, and waits until its HTTP server listens.
func startWithEngine(t *testing.T, vars map[string]string) *running {
	t.Helper()
	engine := memory.NewBackend()
	ports := service.Ports{
		Source: engine.TaskSource(), Sink: engine.ResultSink(),
		Registrar: engine.Registrar(), Heartbeater: engine.Heartbeater(),
	}
	return start(t, engine, func(ctx context.Context, stdout, stderr io.Writer) error {
		return service.RunWithPorts(ctx, nil, env(vars), stdout, stderr, fixtures(vars), ports)
	})
}

func start(t *testing.T, engine *memory.Backend, run func(ctx context.Context, stdout, stderr io.Writer) error) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{engine: engine, logs: newLogLines(), cancel: cancel, done: make(chan error, 1)}
	var stderr bytes.Buffer
	go func() { r.done <- run(ctx, r.logs, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("service did not stop")
		}
	})
	listening := r.logs.waitFor(t, "http server listening")
	r.baseURL = "http://" + listening["addr"].(string)
	return r
}

// stop cancels the service's context and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("service did not stop")
		return nil
	}
}

type healthBody struct {
	Status string `json:"status"`
	Checks []struct {
		Name   string         `json:"name"`
		Status string         `json:"status"`
		Data   map[string]any `json:"data"`
	} `json:"checks"`
}

// probe GETs a health path and decodes its SmallRye-style body.
func probe(t *testing.T, baseURL, path string) (int, healthBody) {
	t.Helper()
	resp, err := http.Get(baseURL + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body healthBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body), "body of %s", path)
	return resp.StatusCode, body
}

func waitForStatus(t *testing.T, baseURL, path string, want int) {
	t.Helper()
	require.Eventually(t, func() bool {
		resp, err := http.Get(baseURL + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == want
	}, 10*time.Second, 5*time.Millisecond, fmt.Sprintf("%s never answered %d", path, want))
}
