// Package process holds counted fault scenarios at the level of processes:
// the executor service runs as a real process (the binary of
// test/e2e/fixture-executor, the service hosting the example types), and
// the test restarts its engine under load in each gRPC intake mode, or
// stops it with SIGTERM, SIGKILL or SIGSTOP while it holds tasks. Each
// scenario counts every task it hands to the system and every result that
// comes back (testkit.Outcome), fails on any lost task, and prints an
// OUTCOME line with its figures.
//
// The engines are the project's own: grpctest (internal/adapters/grpc),
// in the test's process, for the gRPC restarts and the gRPC SIGTERM;
// kafkatest's embedded broker for the Kafka SIGTERM; and the reference
// engine, cmd/devengine, as a process, for the crashes, since reassigning
// the tasks of an executor whose heartbeats stop is an engine's job.
//
// The default variants are short; GAMELAN_FAULTS_LONG=1 (testkit.Long)
// runs larger counts.
package process

import (
	"os"
	"testing"
	"time"

	"github.com/gamelan-go/executor/test/testkit"
)

// builds holds the binaries of the package's tests, built once.
var builds testkit.Builds

func TestMain(m *testing.M) {
	code := m.Run()
	builds.Remove()
	os.Exit(code)
}

// executorBinary returns the path of the service binary (fixture-executor:
// the service hosting the example executor types).
func executorBinary(t *testing.T) string {
	t.Helper()
	return builds.Binary(t, "github.com/gamelan-go/executor/test/e2e/fixture-executor")
}

// devengineBinary returns the path of the reference engine binary.
func devengineBinary(t *testing.T) string {
	t.Helper()
	return builds.Binary(t, "github.com/gamelan-go/executor/cmd/devengine")
}

// Deadlines, generous because the machine running the tests may be busy:
// startTimeout bounds a process's start (listening, ready, registered),
// stopTimeout its exit once signalled, answerTimeout the wait for every
// task of a scenario to be answered (longer for the long variants' larger
// counts).
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 40 * time.Second
)

var answerTimeout = testkit.Pick(90*time.Second, 5*time.Minute)

// loopbackEnv is the part of an executor's environment every scenario
// shares: servers on free ports of 127.0.0.1, JSON logs at level.
func loopbackEnv(instance, level string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_INSTANCE_ID": instance,
		"GAMELAN_EXECUTOR_HTTP_HOST":   "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":   "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":   "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":   "0",
		"GAMELAN_EXECUTOR_REST_HOST":   "127.0.0.1",
		"GAMELAN_EXECUTOR_REST_PORT":   "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":   level,
	}
}

// startExecutor starts an executor process with env and waits until its
// HTTP server listens.
func startExecutor(t *testing.T, name string, env map[string]string) *testkit.Service {
	t.Helper()
	return testkit.StartService(t, executorBinary(t), name, env, startTimeout)
}

// ms is d in whole milliseconds, for Notes.
func ms(d time.Duration) int64 { return d.Milliseconds() }
