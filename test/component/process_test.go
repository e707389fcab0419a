package component

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// builtBinary is the service binary, built once for the package's tests.
var builtBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinary.dir != "" {
		os.RemoveAll(builtBinary.dir)
	}
	os.Exit(code)
}

// executorBinary builds cmd/executor once and returns its path.
func executorBinary(t *testing.T) string {
	t.Helper()
	builtBinary.once.Do(func() {
		builtBinary.dir, builtBinary.err = os.MkdirTemp("", "executor-bin-")
		if builtBinary.err != nil {
			return
		}
		builtBinary.path = filepath.Join(builtBinary.dir, "executor")
		build := exec.Command("go", "build", "-o", builtBinary.path, "github.com/gamelan-go/executor/cmd/executor")
		build.Stderr = os.Stderr
		builtBinary.err = build.Run()
	})
	require.NoError(t, builtBinary.err, "build the service binary")
	return builtBinary.path
}

// TestProcessExitsCleanlyOnSIGTERM builds the real binary, runs it with
// default settings (on loopback, with no engine to register with), and stops
// it the way Kubernetes does.
func TestProcessExitsCleanlyOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := executorBinary(t)

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "GAMELAN_EXECUTOR_HTTP_HOST=127.0.0.1", "GAMELAN_EXECUTOR_HTTP_PORT=0",
		"GAMELAN_EXECUTOR_GRPC_HOST=127.0.0.1", "GAMELAN_EXECUTOR_GRPC_PORT=0",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET="+unusedAddress(t),
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS="+unusedAddress(t))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	addr := make(chan string, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			var line map[string]any
			if json.Unmarshal(scanner.Bytes(), &line) == nil {
				if line["msg"] == "http server listening" {
					addr <- line["addr"].(string)
				}
				if line["msg"] == "service stopped" {
					return
				}
			}
		}
	}()
	var baseURL string
	select {
	case a := <-addr:
		baseURL = "http://" + a
	case <-time.After(20 * time.Second):
		t.Fatal("the service never started listening")
	}
	waitForStatus(t, baseURL, "/q/health/live", http.StatusOK)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { <-stopped; exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "the service did not exit cleanly")
		require.Equal(t, 0, cmd.ProcessState.ExitCode())
	case <-time.After(20 * time.Second):
		t.Fatal("the service did not exit after SIGTERM")
	}
}

// TestProcessRejectsBadConfigurationWithExitCode checks main's contract: a
// bad variable prints one line on stderr and exits non-zero.
func TestProcessRejectsBadConfigurationWithExitCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := executorBinary(t)

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "GAMELAN_EXECUTOR_QUEUE_SIZE=-1")
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.NotEqual(t, 0, exitErr.ExitCode())
	require.Empty(t, out)
	require.Regexp(t, `^executor: GAMELAN_EXECUTOR_QUEUE_SIZE="-1": [^\n]+\n$`, string(exitErr.Stderr))
}
