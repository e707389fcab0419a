// Package e2e runs the executor service as real processes (the binary of
// fixture-executor: the service as cmd/executor runs it, hosting the example
// executor types as fixtures, built once per test run) and checks what an
// engine sees
// when they work, die or stop under load: against a Kafka broker that the
// test itself runs on 127.0.0.1 (kafkatest, an in-process kfake cluster),
// and against the reference engine, cmd/devengine, run as a process too
// (built once beside the service), with its embedded broker, driven
// through its HTTP API.
package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// builtBinaries are the service and the reference engine, built once for
// the package's tests into one directory.
var builtBinaries struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinaries.dir != "" {
		os.RemoveAll(builtBinaries.dir)
	}
	os.Exit(code)
}

// binaries builds fixture-executor and cmd/devengine once and returns the
// directory holding them (named executor and devengine).
func binaries(t *testing.T) string {
	t.Helper()
	builtBinaries.once.Do(func() {
		builtBinaries.dir, builtBinaries.err = os.MkdirTemp("", "executor-e2e-")
		if builtBinaries.err != nil {
			return
		}
		for name, pkg := range map[string]string{
			"executor":  "github.com/gamelan-go/executor/test/e2e/fixture-executor",
			"devengine": "github.com/gamelan-go/executor/cmd/devengine",
		} {
			build := exec.Command("go", "build", "-o", filepath.Join(builtBinaries.dir, name), pkg)
			build.Stderr = os.Stderr
			if builtBinaries.err = build.Run(); builtBinaries.err != nil {
				return
			}
		}
	})
	require.NoError(t, builtBinaries.err, "build the service and the reference engine")
	return builtBinaries.dir
}

// executorBinary returns the path of the service binary.
func executorBinary(t *testing.T) string {
	t.Helper()
	return filepath.Join(binaries(t), "executor")
}

// devengineBinary returns the path of the reference engine binary.
func devengineBinary(t *testing.T) string {
	t.Helper()
	return filepath.Join(binaries(t), "devengine")
}

// startTimeout bounds how long a process may take to listen, and
// stopTimeout how long it may take to exit once signalled.
const startTimeout, stopTimeout = 20 * time.Second, 30 * time.Second

// process is one process started by a test: an executor, or the
// reference engine.
type process struct {
	name    string
	baseURL string // of an executor's HTTP server, from its "http server listening" line
	cmd     *exec.Cmd
	stderr  testkit.SyncBuffer // written by exec's copier until Wait returns

	mu      sync.Mutex
	lines   []map[string]any // JSON log lines of stdout
	raw     []string
	changed chan struct{} // closed and replaced on every line and at exit

	exited  chan struct{} // closed once Wait has returned
	waitErr error         // Wait's error, set before exited closes
}

// startProcess runs the service binary with exactly vars as its
// environment and waits until its HTTP server listens. The process is
// killed at the end of the test if it is still running.
func startProcess(t *testing.T, name string, vars map[string]string) *process {
	t.Helper()
	cmd := exec.Command(executorBinary(t))
	cmd.Env = []string{}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := startCommand(t, name, cmd)
	listening := p.waitForLine(t, startTimeout, "http server listening")
	addr, _ := listening["addr"].(string)
	require.NotEmpty(t, addr, "address in %v", listening)
	p.baseURL = "http://" + addr
	return p
}

// startCommand starts cmd, keeping every line of its stdout (and its
// stderr), and kills it at the end of the test if it is still running.
func startCommand(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, changed: make(chan struct{}), exited: make(chan struct{})}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	go func() {
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for scanner.Scan() {
			p.addLine(scanner.Text())
		}
		// Reading first, then Wait, as os/exec requires of StdoutPipe.
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("process %s stdout:\n%s\nstderr:\n%s", p.name, p.text(), p.stderr.String())
		}
	})
	return p
}

// waitReady waits until the process answers 200 on /q/health/ready.
func (p *process) waitReady(t *testing.T) {
	t.Helper()
	var last string
	require.Eventually(t, func() bool {
		resp, err := http.Get(p.baseURL + "/q/health/ready")
		if err != nil {
			last = err.Error()
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK
	}, startTimeout, 10*time.Millisecond, "%s never ready; last answer: %s", p, last)
}

func (p *process) addLine(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw = append(p.raw, line)
	var fields map[string]any
	if json.Unmarshal([]byte(line), &fields) == nil {
		p.lines = append(p.lines, fields)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// text returns everything the process wrote on stdout so far.
func (p *process) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// linesWith returns the log lines whose msg is msg, in order.
func (p *process) linesWith(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var found []map[string]any
	for _, line := range p.lines {
		if line["msg"] == msg {
			found = append(found, line)
		}
	}
	return found
}

// waitForLine waits until the process logs a line whose msg is msg and
// returns the first such line; it fails when the process exits or d passes
// first.
func (p *process) waitForLine(t *testing.T, d time.Duration, msg string) map[string]any {
	t.Helper()
	var line map[string]any
	p.waitForOutput(t, d, fmt.Sprintf("a line with msg %q", msg), func() bool {
		found := p.linesWith(msg)
		if len(found) > 0 {
			line = found[0]
		}
		return line != nil
	})
	return line
}

// linesContaining returns the lines of stdout (text or JSON) that contain
// text, in order.
func (p *process) linesContaining(text string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var found []string
	for _, line := range p.raw {
		if strings.Contains(line, text) {
			found = append(found, line)
		}
	}
	return found
}

// waitForText waits until the process writes a line of stdout containing
// text and returns the first such line; it fails when the process exits or
// d passes first.
func (p *process) waitForText(t *testing.T, d time.Duration, text string) string {
	t.Helper()
	var line string
	p.waitForOutput(t, d, fmt.Sprintf("a line containing %q", text), func() bool {
		found := p.linesContaining(text)
		if len(found) > 0 {
			line = found[0]
		}
		return len(found) > 0
	})
	return line
}

// waitForOutput waits, checking on every line of stdout, until found
// holds; it fails when the process exits or d passes first.
func (p *process) waitForOutput(t *testing.T, d time.Duration, what string, found func() bool) {
	t.Helper()
	timeout := time.After(d)
	for {
		p.mu.Lock()
		changed := p.changed
		p.mu.Unlock()
		if found() {
			return
		}
		select {
		case <-changed:
		case <-p.exited:
			if found() {
				return
			}
			t.Fatalf("process %s exited (%v) without writing %s; stdout:\n%s\nstderr:\n%s", p.name, p.waitErr, what, p.text(), p.stderr.String())
		case <-timeout:
			t.Fatalf("process %s did not write %s within %s; stdout:\n%s\nstderr:\n%s", p.name, what, d, p.text(), p.stderr.String())
		}
	}
}

// signal sends sig to the process.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig), "signal %s to %s", sig, p.name)
}

// wait waits for the process to exit and returns Wait's error.
func (p *process) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(stopTimeout):
		t.Fatalf("process %s did not exit within %s; stdout:\n%s", p.name, stopTimeout, p.text())
		return nil
	}
}

// partitions returns the partitions of the tasks topic the process held
// when it last joined its consumer group (its "joined kafka consumer
// group" log line), sorted.
func (p *process) partitions(t *testing.T) []int32 {
	t.Helper()
	joins := p.linesWith("joined kafka consumer group")
	require.NotEmpty(t, joins, "process %s never joined its group", p.name)
	return partitionsOf(t, joins[len(joins)-1])
}

// partitionsOf reads the partitions attribute of a join log line.
func partitionsOf(t *testing.T, line map[string]any) []int32 {
	t.Helper()
	list, ok := line["partitions"].([]any)
	if line["partitions"] != nil {
		require.True(t, ok, "partitions of %v", line)
	}
	partitions := make([]int32, 0, len(list))
	for _, v := range list {
		n, ok := v.(float64)
		require.True(t, ok, "partition %v", v)
		partitions = append(partitions, int32(n))
	}
	sort.Slice(partitions, func(i, j int) bool { return partitions[i] < partitions[j] })
	return partitions
}

// String names the process in messages.
func (p *process) String() string {
	return fmt.Sprintf("process %s (pid %d)", p.name, p.cmd.Process.Pid)
}
