package testkit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process control for the suites that run the service (and the reference
// engine) as real processes: build a binary once, start it with an exact
// environment, keep its log lines, signal it, wait for a line or its exit.

// Builds builds Go main packages into one temporary directory, each at most
// once per test binary, so that the parallel tests of a package share the
// binaries. The zero value is ready to use; a package's TestMain calls
// Remove after m.Run.
type Builds struct {
	mu     sync.Mutex
	dir    string
	dirErr error
	byPkg  map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Binary returns the path of the binary of the main package pkg (an import
// path, "github.com/gamelan-go/executor/cmd/devengine"), building it with
// `go build` on first use. Packages build concurrently; callers asking for
// the same one wait for its one build. It fails t when the build fails.
func (b *Builds) Binary(t testing.TB, pkg string) string {
	t.Helper()
	b.mu.Lock()
	if b.dir == "" && b.dirErr == nil {
		b.dir, b.dirErr = os.MkdirTemp("", "gamelan-bin-")
	}
	dir, dirErr := b.dir, b.dirErr
	if b.byPkg == nil {
		b.byPkg = make(map[string]*build)
	}
	one := b.byPkg[pkg]
	if one == nil {
		one = &build{}
		b.byPkg[pkg] = one
	}
	b.mu.Unlock()
	if dirErr != nil {
		t.Fatalf("binary directory: %v", dirErr)
	}
	one.once.Do(func() {
		one.path = filepath.Join(dir, strings.ReplaceAll(pkg, "/", "_"))
		cmd := exec.Command("go", "build", "-o", one.path, pkg)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			one.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out.String())
		}
	})
	if one.err != nil {
		t.Fatal(one.err)
	}
	return one.path
}

// Remove deletes every binary built.
func (b *Builds) Remove() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// Command returns a command running path with args and exactly env as its
// environment (sorted, so that the order never varies): nothing of the
// test's own environment leaks into the process.
func Command(path string, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Env = []string{}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	return cmd
}

// Process is a process started by a test. Every line of its stdout is kept,
// and decoded when it is a JSON object (the service's log lines); its stderr
// is kept whole. Its methods are safe for concurrent use.
type Process struct {
	// Name names the process in messages.
	Name string
	// Cmd is the running command.
	Cmd *exec.Cmd

	stderr SyncBuffer

	mu      sync.Mutex
	lines   []map[string]any // stdout lines that are JSON objects
	raw     []string         // every stdout line
	changed chan struct{}    // closed and replaced on every line and at exit

	exited   chan struct{} // closed once Wait has returned
	waitErr  error         // Wait's error, set before exited closes
	exitedAt time.Time
}

// Start starts cmd, whose Stdout and Stderr must be unset, and returns it
// as a Process. At the end of the test the process is killed if it still
// runs (stopped ones included), and its output is logged if the test
// failed.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Name: name, Cmd: cmd, changed: make(chan struct{}), exited: make(chan struct{})}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go p.read(stdout)
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", p, p.Output(), p.Stderr())
		}
	})
	return p
}

// read keeps the lines of stdout until it closes, then waits for the
// process (os/exec requires reading a StdoutPipe to its end first).
func (p *Process) read(stdout io.Reader) {
	scanner := bufio.NewScanner(stdout)
	scanner.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for scanner.Scan() {
		p.addLine(scanner.Text())
	}
	// A line longer than the scanner's limit ends the scan: drain the pipe
	// so that the process never blocks writing to it.
	_, _ = io.Copy(io.Discard, stdout)
	err := p.Cmd.Wait()
	p.mu.Lock()
	p.waitErr, p.exitedAt = err, time.Now()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	close(p.exited)
}

func (p *Process) addLine(line string) {
	var fields map[string]any
	isJSON := json.Unmarshal([]byte(line), &fields) == nil
	p.mu.Lock()
	defer p.mu.Unlock()
	p.raw = append(p.raw, line)
	if isJSON {
		p.lines = append(p.lines, fields)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Output returns everything the process wrote on stdout so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// Stderr returns everything the process wrote on stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Lines returns the JSON log lines whose "msg" is msg, in order.
func (p *Process) Lines(msg string) []map[string]any {
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

// LinesContaining returns the lines of stdout (JSON or not) that contain
// text, in order.
func (p *Process) LinesContaining(text string) []string {
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

// WaitForLine waits up to d for a JSON log line whose "msg" is msg and
// returns the first one. It fails t when the process exits or d passes
// first.
func (p *Process) WaitForLine(t testing.TB, d time.Duration, msg string) map[string]any {
	t.Helper()
	return p.WaitForLineWhere(t, d, msg, func(map[string]any) bool { return true })
}

// WaitForLineWhere waits up to d for a JSON log line whose "msg" is msg and
// for which match holds, and returns the first one. It fails t when the
// process exits or d passes first.
func (p *Process) WaitForLineWhere(t testing.TB, d time.Duration, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	p.WaitForOutput(t, d, fmt.Sprintf("a line with msg %q", msg), func() bool {
		for _, line := range p.Lines(msg) {
			if match(line) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

// WaitForText waits up to d for a line of stdout containing text and returns
// the first one. It fails t when the process exits or d passes first.
func (p *Process) WaitForText(t testing.TB, d time.Duration, text string) string {
	t.Helper()
	var found string
	p.WaitForOutput(t, d, fmt.Sprintf("a line containing %q", text), func() bool {
		if lines := p.LinesContaining(text); len(lines) > 0 {
			found = lines[0]
			return true
		}
		return false
	})
	return found
}

// WaitForOutput checks found on every line the process writes until it
// holds; it fails t, saying what it waited for, when the process exits or
// d passes first.
func (p *Process) WaitForOutput(t testing.TB, d time.Duration, what string, found func() bool) {
	t.Helper()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
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
			t.Fatalf("%s exited (%v) without writing %s", p, p.waitErr, what)
		case <-timeout.C:
			t.Fatalf("%s did not write %s within %s", p, what, d)
		}
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p, err)
	}
}

// Exited is closed once the process has exited and its output is read.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitedAt returns when the process was seen to exit; zero while it runs.
func (p *Process) ExitedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitedAt
}

// Wait waits up to d for the process to exit and returns its exit error
// (nil for status 0). It fails t when the process is still running after d.
func (p *Process) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", p, d)
		return nil
	}
}

// String names the process in messages.
func (p *Process) String() string {
	return fmt.Sprintf("process %s (pid %d)", p.Name, p.Cmd.Process.Pid)
}

// Service is a process of the executor service: it logs JSON and serves
// probes and metrics on its HTTP server.
type Service struct {
	*Process
	// BaseURL is the address of its HTTP server, "http://127.0.0.1:port".
	BaseURL string
}

// StartService runs the service binary at path with exactly env as its
// environment (see Command), and waits up to d until its HTTP server
// listens (its "http server listening" line; set HTTP_PORT to 0 and
// HTTP_HOST to 127.0.0.1 for a free loopback port, and log at info level or
// below).
func StartService(t testing.TB, path, name string, env map[string]string, d time.Duration) *Service {
	t.Helper()
	s := &Service{Process: Start(t, name, Command(path, env))}
	listening := s.WaitForLine(t, d, "http server listening")
	addr, _ := listening["addr"].(string)
	if addr == "" {
		t.Fatalf("%s: no address in %v", s, listening)
	}
	s.BaseURL = "http://" + addr
	return s
}

// probeClient is the client of probes and metrics: short calls, so that a
// frozen process cannot hang a test.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// WaitReady waits up to d until the service answers 200 on
// /q/health/ready (registered, intake connected, not draining).
func (s *Service) WaitReady(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		resp, err := probeClient.Get(s.BaseURL + "/q/health/ready")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s; last answer: %s", s, d, last)
		}
		select {
		case <-s.exited:
			t.Fatalf("%s exited (%v) before it was ready", s, s.waitErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Metric returns the sum of the samples of the Prometheus metric name
// (every label set) that the service exposes on /q/metrics, and false when
// it exposes none or cannot be reached.
func (s *Service) Metric(name string) (float64, bool) {
	resp, err := probeClient.Get(s.BaseURL + "/q/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, false
	}
	return sumSamples(string(raw), name)
}

// sumSamples sums the samples of metric name in a Prometheus text
// exposition, and reports whether there was one.
func sumSamples(text, name string) (float64, bool) {
	sum, seen := 0.0, false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		// name{labels} value [timestamp]; label values may hold spaces.
		metric, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			metric, rest = line[:i], line[i:]
		}
		if metric != name {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndex(rest, "}")
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sum, seen = sum+v, true
	}
	return sum, seen
}

// FreeAddr returns 127.0.0.1:<port> with a port that was free a moment
// ago: the kernel's pick for a listener closed at once. Another process
// may take it before the caller binds it, so callers retry on "address
// already in use".
func FreeAddr(t testing.TB) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	addr := listener.Addr().String()
	if err := listener.Close(); err != nil {
		t.Fatalf("free port: %v", err)
	}
	return addr
}
