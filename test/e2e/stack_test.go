package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// demoPerType is the stack's demo workload per example type; one task in
// ten has bad input by design.
const demoPerType = 50

// TestStackOneCommand runs the one-command stack as the README does
// (`devengine -executor <binary> -demo N`), on free ports: the engine
// starts the executor, submits the demo workload over gRPC and Kafka and
// prints a summary in which every task is final (none lost), the failures
// are exactly the bad inputs, by code, and the transports answered their
// types' share. The executor stays ready while the stack is up; SIGINT
// stops the engine, which stops the executor with SIGTERM: both exit
// cleanly (the engine with 0), the executor after draining and logging
// its stop.
func TestStackOneCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	executorLog := filepath.Join(dir, "executor.log")
	httpAddr, executorHTTP := freeAddr(t), freeAddr(t)
	executorGRPCPort := freePort(t)
	cmd := exec.Command(devengineBinary(t), "-executor", executorBinary(t), "-demo", strconv.Itoa(demoPerType),
		"-http", httpAddr, "-grpc", freeAddr(t), "-kafka", freeAddr(t),
		"-executor-http", executorHTTP, "-executor-grpc-port", strconv.Itoa(executorGRPCPort),
		"-executor-rest-port", strconv.Itoa(freePort(t)), "-executor-log", executorLog)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stack := startCommand(t, "stack", cmd)

	var executorPID int
	pidLine := stack.waitForText(t, startTimeout, "executor: pid ")
	_, err := fmt.Sscanf(strings.TrimSpace(pidLine), "executor: pid %d,", &executorPID)
	require.NoError(t, err, "executor pid in %q", pidLine)
	t.Cleanup(func() {
		// The executor runs in its own process group: if the test ends
		// with the engine still up (a failure), it is stopped here, while
		// the engine has not reaped it and its pid is still its own.
		select {
		case <-stack.exited:
		default:
			_ = syscall.Kill(executorPID, syscall.SIGKILL)
		}
		if t.Failed() {
			logged, _ := os.ReadFile(executorLog)
			t.Logf("executor log:\n%s", logged)
		}
	})

	total := demoPerType * 4
	stack.waitForText(t, 2*time.Minute, fmt.Sprintf("all %d tasks answered.", total))
	stack.waitForText(t, 10*time.Second, "services stay up")
	printed := parsePrintedSummary(t, stack.text(), total)
	bad := demoPerType / 10
	assert.Equal(t, total, printed.tasks, "tasks in the summary")
	assert.Equal(t, map[string]int{"COMPLETED": total - 4*bad, "FAILED": 4 * bad}, printed.states,
		"every task final (none lost), the failures exactly the bad inputs")
	assert.Equal(t, map[string]int{"INVALID_INPUT": 2 * bad, "INVALID_ORDER": bad, "INVALID_PAYMENT": bad}, printed.failures,
		"failures by code: the bad input of each type")
	assert.Equal(t, map[string]int{"grpc-push": 3 * demoPerType, "kafka": demoPerType}, printed.answered,
		"answered by transport: three types over gRPC, payment-processor over Kafka")
	assert.Zero(t, printed.refused, "refused calls")

	api := testkit.NewEngineAPI(httpAddr)
	summary := api.Summary(t)
	assert.Equal(t, total, summary.Tasks, "the API agrees with the printed summary")
	assert.Equal(t, printed.states, summary.ByState, "the API agrees with the printed summary")
	for _, e := range api.Executors(t) {
		assert.True(t, e.Healthy, "%s healthy", e.ExecutorID)
		if e.CommunicationType == "GRPC" {
			assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", executorGRPCPort), e.Endpoint, "push endpoint of %s", e.ExecutorID)
		}
	}

	// The stack stays up: the executor's probes answer, the engine runs.
	for _, probe := range []string{"/q/health/ready", "/q/health/live", "/q/health/ready"} {
		resp, err := http.Get("http://" + executorHTTP + probe)
		require.NoError(t, err, "executor probe %s", probe)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "executor probe %s", probe)
	}
	select {
	case <-stack.exited:
		t.Fatalf("the stack exited while it should stay up: %v", stack.waitErr)
	default:
	}

	stack.signal(t, syscall.SIGINT)
	stack.waitForText(t, stopTimeout, "stopping the executor (SIGTERM) and the engine")
	require.NoError(t, stack.wait(t), "the engine exits 0 after Ctrl-C, the executor having exited cleanly; stderr:\n%s", stack.stderr.String())
	assert.True(t, errors.Is(syscall.Kill(executorPID, 0), syscall.ESRCH), "the executor process (pid %d) is gone", executorPID)
	_, err = http.Get("http://" + executorHTTP + "/q/health/live")
	assert.Error(t, err, "the executor's probes are down")

	lines := readJSONLog(t, executorLog)
	var drained, stopped bool
	for _, line := range lines {
		switch line["msg"] {
		case "runtime drained":
			drained = true
			assert.Equal(t, float64(0), line["results_undelivered"], "results undelivered at the stop: %v", line)
		case "service stopped":
			stopped = true
		}
		assert.NotEqual(t, "ERROR", line["level"], "executor logged an error: %v", line)
	}
	assert.True(t, drained, "the executor drained")
	assert.True(t, stopped, "the executor logged its stop")
}

// printedSummary is the summary the stack prints.
type printedSummary struct {
	tasks               int
	states, failures    map[string]int
	answered            map[string]int // by transport
	duplicates, refused int
}

// parsePrintedSummary reads the summary that follows "all N tasks
// answered." in the stack's output.
func parsePrintedSummary(t *testing.T, output string, total int) printedSummary {
	t.Helper()
	_, after, found := strings.Cut(output, fmt.Sprintf("all %d tasks answered.\n", total))
	require.True(t, found, "summary in:\n%s", output)
	s := printedSummary{states: map[string]int{}, failures: map[string]int{}, answered: map[string]int{}}
	section := ""
	for line := range strings.Lines(after) {
		line = strings.TrimRight(line, "\n")
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "tasks: "):
			n, err := strconv.Atoi(strings.TrimPrefix(line, "tasks: "))
			require.NoError(t, err, "line %q", line)
			s.tasks, section = n, "states"
		case line == "failures by code:":
			section = "failures"
		case line == "by transport:":
			section = "transports"
		case strings.HasPrefix(line, "duplicate results dropped: "):
			_, err := fmt.Sscanf(line, "duplicate results dropped: %d, refused calls: %d", &s.duplicates, &s.refused)
			require.NoError(t, err, "line %q", line)
			return s
		case section == "transports" && len(fields) > 0 && fields[0] == "transport":
			// the table's header
		case strings.HasPrefix(line, "  ") && len(fields) >= 2:
			n, err := strconv.Atoi(fields[1])
			require.NoError(t, err, "line %q", line)
			switch section {
			case "states":
				s.states[fields[0]] = n
			case "failures":
				s.failures[fields[0]] = n
			case "transports":
				s.answered[fields[0]] = n
			}
		}
	}
	t.Fatalf("summary without its last line in:\n%s", after)
	return s
}

// readJSONLog reads a file of JSON log lines; lines that are not JSON fail.
func readJSONLog(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var lines []map[string]any
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for scanner.Scan() {
		var line map[string]any
		require.NoError(t, json.Unmarshal(scanner.Bytes(), &line), "log line %q", scanner.Text())
		lines = append(lines, line)
	}
	require.NoError(t, scanner.Err())
	require.NotEmpty(t, lines, "the executor logged")
	return lines
}
