package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process of the harness: the executor service under test,
// the reference engine, or a raw baseline (this binary run with -role).
// The system under test never shares the harness's process, so its CPU,
// memory and garbage collection are its own and measurable.
type proc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // the exit status, once exited is closed
	// lines receives the child's stdout lines (raw baselines print their
	// listen address there); stderr goes to the harness's stderr.
	lines chan string
}

// startProc starts path with args and env added to the harness's own
// environment.
func startProc(name, path string, env map[string]string, args ...string) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{}), lines: make(chan string, 64)}
	go func() {
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			select {
			case p.lines <- scanner.Text():
			default: // nobody reads: drop rather than block the child
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// startRole runs this binary again as the named raw baseline and returns
// the first line it prints (its listen address, or "ready").
func startRole(ctx context.Context, role string, args ...string) (*proc, string, error) {
	// Under go test this is the test binary, whose TestMain plays roles.
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	// "--" ends the harness's own flags: the role parses the rest.
	p, err := startProc(role, self, nil, append([]string{"-role", role, "--"}, args...)...)
	if err != nil {
		return nil, "", err
	}
	select {
	case line := <-p.lines:
		return p, line, nil
	case <-p.exited:
		return nil, "", fmt.Errorf("%s exited before it was ready: %v", role, p.err)
	case <-ctx.Done():
		p.kill()
		return nil, "", context.Cause(ctx)
	}
}

// stop sends SIGTERM and waits up to d for the exit, then kills.
func (p *proc) stop(d time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		var exit *exec.ExitError
		if errors.As(p.err, &exit) {
			return fmt.Errorf("%s: %w", p.name, p.err)
		}
		return nil
	case <-time.After(d):
		p.kill()
		return fmt.Errorf("%s did not stop within %s", p.name, d)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// cpuTime is the CPU time (user + system) the process has used, from
// /proc/<pid>/stat.
func (p *proc) cpuTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'. utime and stime are fields 14 and 15, in clock ticks (100/s
	// on Linux).
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("unexpected /proc stat: %q", s)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// rss is the process's resident memory in bytes, from /proc/<pid>/status.
func (p *proc) rss() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// service is the executor service under test: a proc with its HTTP server
// (probes and metrics) at httpAddr.
type service struct {
	*proc
	httpAddr string
}

// startService runs the executor binary with env (GAMELAN_EXECUTOR_*
// variables; the HTTP address is chosen here) and waits until
// /q/health/ready answers 200.
func startService(ctx context.Context, path string, env map[string]string) (*service, error) {
	return startServiceArgs(ctx, path, nil, env)
}

// startServiceArgs is startService for a binary that takes arguments, such
// as this one run as a role that hosts the service.
func startServiceArgs(ctx context.Context, path string, args []string, env map[string]string) (*service, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(httpAddr)
	all := map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":     host,
		"GAMELAN_EXECUTOR_HTTP_PORT":     port,
		"GAMELAN_EXECUTOR_LOG_LEVEL":     "warn",
		"GAMELAN_EXECUTOR_ENABLED_TYPES": "calculate-tax",
	}
	if profileDir != "" {
		all["GAMELAN_EXECUTOR_PROFILING"] = "true"
	}
	for k, v := range env {
		all[k] = v
	}
	p, err := startProc("executor", path, all, args...)
	if err != nil {
		return nil, err
	}
	s := &service{proc: p, httpAddr: httpAddr}
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	if profileDir != "" {
		go s.profile(profileDir)
	}
	return s, nil
}

// profileDir, set by -profile, is where each executor process's CPU
// profile and execution trace are written.
var profileDir string

// profile takes a CPU profile of the executor's first seconds under load
// (profileSeconds from 1 s after it is ready), then an execution trace of
// one second, into dir, named after the process id: read them with
// `go tool pprof -top DIR/executor-PID.cpu` and `go tool trace`. A process
// that exits first leaves a partial or no file.
func (s *service) profile(dir string) {
	const profileSeconds = 5
	select {
	case <-time.After(time.Second):
	case <-s.exited:
		return
	}
	pid := s.cmd.Process.Pid
	for _, p := range []struct{ path, file string }{
		{fmt.Sprintf("/debug/pprof/profile?seconds=%d", profileSeconds), fmt.Sprintf("executor-%d.cpu", pid)},
		{"/debug/pprof/trace?seconds=1", fmt.Sprintf("executor-%d.trace", pid)},
	} {
		resp, err := http.Get("http://" + s.httpAddr + p.path)
		if err != nil {
			return // the process exited: its run was shorter than the profile
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			_ = os.WriteFile(filepath.Join(dir, p.file), data, 0o644)
		}
	}
}

// waitReady polls the readiness probe until it answers 200.
func (s *service) waitReady(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get("http://" + s.httpAddr + "/q/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-s.exited:
			return fmt.Errorf("executor exited before it was ready: %v", s.err)
		case <-ctx.Done():
			return fmt.Errorf("executor not ready: %w (last: %v)", context.Cause(ctx), err)
		}
	}
}

// metric sums the samples of a Prometheus metric on /q/metrics (every
// label set), e.g. "go_memstats_mallocs_total".
func (s *service) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + s.httpAddr + "/q/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	found := false
	for line := range strings.Lines(string(body)) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("metric %s not found", name)
	}
	return sum, nil
}

// ask sends sig to the process and returns the rest of the first line it
// prints on stdout that starts with prefix (a raw baseline's answer to
// SIGUSR1, say), skipping other lines, or fails after d.
func (p *proc) ask(sig os.Signal, prefix string, d time.Duration) (string, error) {
	// Lines printed before the signal cannot be its answer.
	for drained := false; !drained; {
		select {
		case <-p.lines:
		default:
			drained = true
		}
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return "", err
	}
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		select {
		case line := <-p.lines:
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				return strings.TrimSpace(rest), nil
			}
		case <-p.exited:
			return "", fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-timeout.C:
			return "", fmt.Errorf("%s did not answer %s within %s", p.name, sig, d)
		}
	}
}
