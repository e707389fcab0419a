package component

import (
	"context"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// conditionTimeout bounds every wait for a condition in the gRPC component
// tests; conditionTick is how often a polled condition is checked.
const conditionTimeout, conditionTick = 20 * time.Second, 5 * time.Millisecond

// serviceEnv is grpcEnv at info level, the lowest level at which start
// sees the service's "http server listening" line (task successes are
// logged at debug level, so info stays quiet under load).
func serviceEnv(engineAddr, intake string) map[string]string {
	vars := grpcEnv(engineAddr, intake)
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "info"
	return vars
}

// startService runs the real service through service.Run with exactly vars
// as its environment, and waits until its HTTP server listens.
func startService(t *testing.T, vars map[string]string) *running {
	t.Helper()
	vars = maps.Clone(vars)
	return start(t, nil, func(ctx context.Context, stdout, stderr io.Writer) error {
		return runFixtures(ctx, nil, vars, stdout, stderr)
	})
}

// deadline returns a context that ends after d or with the test.
func deadline(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitForRegistration waits until executorID is registered with engine and
// returns its registration.
func waitForRegistration(t *testing.T, engine *grpctest.Engine, executorID string) *gamelanv1.RegisterExecutorRequest {
	t.Helper()
	var reg *gamelanv1.RegisterExecutorRequest
	require.Eventually(t, func() bool {
		var ok bool
		reg, ok = engine.Registration(executorID)
		return ok
	}, conditionTimeout, conditionTick, "%s never registered; registered: %v", executorID, engine.Registrations())
	return reg
}

// waitForServing waits until executorID is registered and the service is
// ready. The runtime registers before it starts intake, so a task pushed
// in between is refused with 503 (which an engine retries; a test that
// pushes once must not).
func waitForServing(t *testing.T, engine *grpctest.Engine, r *running, executorID string) *gamelanv1.RegisterExecutorRequest {
	t.Helper()
	reg := waitForRegistration(t, engine, executorID)
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
	return reg
}

// waitForUniqueResults waits until engine holds at least n unique results.
func waitForUniqueResults(t *testing.T, engine *grpctest.Engine, n int, d time.Duration) {
	t.Helper()
	require.NoError(t, engine.WaitForResults(deadline(t, d), n))
}

// resultKey is the engine's deduplication key of a task with attempt 1.
func resultKey(runID, nodeID string) string { return runID + ":" + nodeID + ":1" }

// taxAmount is the amount of the i-th task of a run: varied, with a
// fractional part, so that every task's tax can be told apart.
func taxAmount(i int) string {
	return strconv.FormatFloat(float64(i)*1.25+0.37, 'f', -1, 64)
}

// taxPush is a calculate-tax push request as the Gamelan engine sends it:
// variables as strings, and the signature naming the executor.
func taxPush(runID, nodeID, amount string) *dispatcherpb.ExecutionRequest {
	return &dispatcherpb.ExecutionRequest{
		RunId: runID, NodeId: nodeID, Attempt: 1, Token: "token-" + nodeID,
		Variables:      map[string]string{"amount": amount},
		IdempotencyKey: resultKey(runID, nodeID),
		Signature:      grpctest.Signature(runID, taxExecutorID),
	}
}

// taxTask is a calculate-tax task for the StreamTasks and ExecuteStream
// intakes, its amount a number.
func taxTask(t *testing.T, runID, nodeID, amount string) *gamelanv1.ExecutionTask {
	t.Helper()
	value, err := strconv.ParseFloat(amount, 64)
	require.NoError(t, err)
	ctx, err := structpb.NewStruct(map[string]any{"amount": value})
	require.NoError(t, err)
	return &gamelanv1.ExecutionTask{
		TaskId: "task-" + runID + "-" + nodeID, RunId: runID, NodeId: nodeID, NodeType: "calculate-tax",
		Attempt: 1, ExecutionToken: "token-" + nodeID, Context: ctx,
	}
}

// checkTaxResult asserts that res completed the calculate-tax task of
// nodeID with amount, and echoes the task's identity.
func checkTaxResult(t *testing.T, res *gamelanv1.TaskResult, runID, nodeID, amount string) bool {
	t.Helper()
	if !assert.NotNil(t, res, "no result for %s", nodeID) {
		return false
	}
	want, err := strconv.ParseFloat(amount, 64)
	require.NoError(t, err)
	ok := assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%s: %v", nodeID, res.GetError())
	out := res.GetOutput().AsMap()
	ok = assert.Equal(t, want*0.1, out["tax"], "%s: tax of %s", nodeID, amount) && ok
	ok = assert.Equal(t, want, out["amount"], "%s: amount", nodeID) && ok
	ok = assert.Equal(t, runID, res.GetRunId()) && ok
	ok = assert.Equal(t, nodeID, res.GetNodeId()) && ok
	ok = assert.EqualValues(t, 1, res.GetAttempt()) && ok
	ok = assert.Equal(t, "token-"+nodeID, res.GetExecutionToken()) && ok
	ok = assert.NotNil(t, res.GetCompletedAt(), "%s: completed_at", nodeID) && ok
	return ok
}

// finishedNodes returns the node ids of run runID that the service logged
// "task finished" for (at debug level for successes): the tasks it ran.
func finishedNodes(l *logLines, runID string) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	nodes := make(map[string]bool)
	for _, line := range l.lines {
		if line["msg"] == "task finished" && line["run_id"] == runID {
			nodes[line["node_id"].(string)] = true
		}
	}
	return nodes
}

// missingResults returns the nodes, sorted, that have no unique result of
// run runID in engine.
func missingResults(engine *grpctest.Engine, runID string, nodes map[string]bool) []string {
	unique := engine.UniqueResults()
	var missing []string
	for node := range nodes {
		if unique[resultKey(runID, node)] == nil {
			missing = append(missing, node)
		}
	}
	slices.Sort(missing)
	return missing
}

// engineTap is test-side instrumentation of a grpctest engine, installed
// with its options: it records every task the engine sends on StreamTasks
// and ExecuteStream (a send that returned nil: written to the transport,
// not necessarily received); while holdResults is set it refuses
// ReportResults and drops results written on ExecuteStream, as if they were
// lost with a breaking connection, so that results stay in flight in the
// executor; and it runs onUnregister when an executor unregisters.
type engineTap struct {
	holdResults atomic.Bool
	// held counts results refused or dropped while holdResults was set:
	// proof that results are in flight in the executor.
	held atomic.Int64

	mu   sync.Mutex
	sent map[string]int // task node id -> successful sends

	onUnregister func(executorID string)
}

func newEngineTap() *engineTap { return &engineTap{sent: make(map[string]int)} }

// options returns the engine options that install the tap.
func (tap *engineTap) options() []grpctest.Option {
	return []grpctest.Option{grpctest.WithServerOptions(
		grpc.ChainStreamInterceptor(tap.interceptStream),
		grpc.ChainUnaryInterceptor(tap.interceptUnary),
	)}
}

func (tap *engineTap) interceptStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod == gamelanv1.ExecutorService_ReportResults_FullMethodName && tap.holdResults.Load() {
		tap.held.Add(1)
		return status.Error(codes.Unavailable, "engine tap: results held")
	}
	return handler(srv, &tappedStream{ServerStream: ss, tap: tap})
}

func (tap *engineTap) interceptUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if r, ok := req.(*gamelanv1.UnregisterExecutorRequest); ok && tap.onUnregister != nil {
		tap.onUnregister(r.GetExecutorId())
	}
	return handler(ctx, req)
}

// sentNodes returns the node ids of every task sent so far.
func (tap *engineTap) sentNodes() map[string]bool {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	nodes := make(map[string]bool, len(tap.sent))
	for node := range tap.sent {
		nodes[node] = true
	}
	return nodes
}

// tappedStream records the tasks its handler sends.
type tappedStream struct {
	grpc.ServerStream
	tap *engineTap
}

// RecvMsg drops results written on an ExecuteStream while results are
// held: the executor sent them, the engine never records them.
func (s *tappedStream) RecvMsg(m any) error {
	for {
		if err := s.ServerStream.RecvMsg(m); err != nil {
			return err
		}
		msg, ok := m.(*gamelanv1.ExecutorMessage)
		if !ok || msg.GetResult() == nil || !s.tap.holdResults.Load() {
			return nil
		}
		s.tap.held.Add(1)
	}
}

func (s *tappedStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	var task *gamelanv1.ExecutionTask
	switch msg := m.(type) {
	case *gamelanv1.ExecutionTask:
		task = msg
	case *gamelanv1.EngineMessage:
		task = msg.GetTask()
	}
	if err == nil && task != nil {
		s.tap.mu.Lock()
		s.tap.sent[task.GetNodeId()]++
		s.tap.mu.Unlock()
	}
	return err
}
