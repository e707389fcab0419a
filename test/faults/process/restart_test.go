package process

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	"github.com/gamelan-go/executor/test/testkit"
)

// TestEngineRestartUnderLoad restarts the engine (grpctest, in the test's
// process, its queues and records kept across the restart on the same
// port) while an executor process takes calculate-tax tasks from it under a
// steady load, in each gRPC intake mode: push (the engine calls Execute),
// stream (StreamTasks) and bidi (ExecuteStream).
//
// Just before the break the engine refuses ReportResults, so that results
// are held in flight in the executor when the engine goes; the engine stays
// down until the executor has failed to reach it, then comes back. It
// proves, in every mode: every task submitted gets a correct result (zero
// lost), the results held at the break included; the executor resumes on
// its own (registration, streams, pushes); and it measures the recovery
// (engine back to its first result; to every task answered).
//
// A task that a stream had written before the break but that never reached
// the executor, or reached it but waited on the stream's own queue, dies
// with the stream: the protocol has no acknowledgement for StreamTasks, and
// an ExecuteStream's unfinished tasks are not handed back. The grpctest
// engine forgets such tasks; a real engine (the reference engine does so)
// sends a task again once its result is overdue. The test plays that part:
// a task without a result overdueAfter after it was last sent is sent
// again, and Notes count those re-sends ("resentOverdue"). A re-send of a
// task whose result was only late comes back as a duplicate, which the
// engine's deduplication absorbs and the outcome reports.
func TestEngineRestartUnderLoad(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"push", "stream", "bidi"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			restartUnderLoad(t, mode)
		})
	}
}

// restartTasks is how many tasks each mode's scenario submits, at most
// restartWindow of them unanswered at a time; the engine breaks once a
// third are answered.
var restartTasks = testkit.Pick(300, 3000)

const restartWindow = 40

// minOutage is how long the engine stays down at least: long enough, in the
// long variant, for gRPC's default reconnect backoff to have grown past the
// executor's 5 s cap (internal/adapters/grpc/client.go), so that recovery
// shows the cap.
var minOutage = testkit.Pick(time.Second, 30*time.Second)

// overdueAfter is how long after its last send a task without a result is
// sent again, as an engine does once a result is overdue. It is well above
// the longest wait of the executor's result retries (5s), so that results
// merely held at the break are not sent for again.
const overdueAfter = 10 * time.Second

// heldMarker is in the error of every ReportResults the tap refuses.
const heldMarker = "engine tap: results held"

func restartUnderLoad(t *testing.T, mode string) {
	outcome := &testkit.Outcome{Scenario: "engine restart under load, " + mode, Notes: map[string]any{"mode": mode}}
	d := &dispatcher{mode: mode, tasks: make(map[string]*trackedTask), up: newGate(), pushes: make(chan string, restartTasks)}
	tap := &restartTap{onSend: d.sent}
	engine := grpctest.NewEngine(grpctest.WithServerOptions(grpc.ChainStreamInterceptor(tap.intercept)))
	d.engine = engine
	addr := engine.Start(t)

	instance := "restart-" + mode
	executorID := "executor-calculate-tax-" + instance
	env := loopbackEnv(instance, "info")
	env["GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET"] = addr
	env["GAMELAN_EXECUTOR_GRPC_INTAKE"] = mode
	env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
	// A small capacity (StreamTasks asks for the free room: workers and
	// queue) keeps tasks waiting at the engine at the break, so that intake
	// must resume for them to be answered.
	env["GAMELAN_EXECUTOR_THREAD_POOL_SIZE"] = "4"
	env["GAMELAN_EXECUTOR_QUEUE_SIZE"] = "16"
	executor := startExecutor(t, instance, env)
	executor.WaitReady(t, startTimeout)
	d.executorID, d.endpoint = executorID, waitRegistered(t, engine, executorID).GetEndpoint()

	ctx, cancel := context.WithTimeout(t.Context(), answerTimeout+startTimeout)
	var helpers sync.WaitGroup
	defer helpers.Wait()
	defer cancel() // ends the helpers before they are waited for
	if mode == "push" {
		for range 4 {
			helpers.Go(func() { d.pushLoop(ctx, t) })
		}
	}

	// The load: tasks submitted as the window allows, paused while the
	// engine is down (it makes no new work then).
	produced := make(chan error, 1)
	helpers.Go(func() {
		for i := range restartTasks {
			if err := engine.WaitForResults(ctx, i-restartWindow+1); err != nil {
				produced <- err
				return
			}
			if err := d.up.wait(ctx); err != nil {
				produced <- err
				return
			}
			d.submit(ctx, outcome, i)
		}
		produced <- nil
	})
	var resent atomic.Int64
	helpers.Go(func() { d.resendOverdue(ctx, &resent) })

	// The break, once a third of the tasks are answered, with results held
	// in flight in the executor.
	require.NoError(t, engine.WaitForResults(ctx, restartTasks/3))
	tap.hold.Store(true)
	require.Eventually(t, func() bool { return tap.held.Load() > 0 }, answerTimeout, 5*time.Millisecond,
		"no ReportResults was ever refused: no result held in flight")
	failuresBefore := len(executor.Lines("result delivery failed, will retry"))
	d.up.close()
	engine.Stop()
	stoppedAt := time.Now()
	tap.hold.Store(false)
	uniqueAtBreak := len(engine.UniqueResults())
	queuedAtBreak := engine.Queued(executorID)
	sentAtBreak := d.sentCount()
	heldAtBreak := tap.held.Load()

	// Down until the executor has tried the stopped engine (a result retry
	// failing for another reason than the tap's refusal).
	executor.WaitForOutput(t, startTimeout, "a result retry against the stopped engine", func() bool {
		lines := executor.Lines("result delivery failed, will retry")
		for _, line := range lines[min(failuresBefore, len(lines)):] {
			if !strings.Contains(fmt.Sprint(line["error"]), heldMarker) {
				return true
			}
		}
		return false
	})
	// And down for minOutage at least, as a restart takes a while (longer
	// in the long variant, so that the executor's reconnection backs off
	// further): a fault of set length, not a wait for a condition.
	if extra := time.Until(stoppedAt.Add(minOutage)); extra > 0 {
		<-time.After(extra)
	}
	require.Equal(t, addr, engine.StartAt(t, addr), "the engine comes back on its port")
	restartedAt := time.Now()
	d.up.open()

	require.NoError(t, engine.WaitForResults(ctx, uniqueAtBreak+1), "a result after the restart")
	outcome.Recovery = time.Since(restartedAt)
	require.NoError(t, <-produced, "the load")
	if err := engine.WaitForResults(ctx, restartTasks); err != nil {
		t.Fatalf("not every task answered: %v; lost so far: %v", err, outcome.Lost())
	}
	allAnswered := time.Since(restartedAt)

	for _, res := range engine.Results() {
		outcome.Answer(resultKey(res))
	}
	wrong := 0
	for key, res := range engine.UniqueResults() {
		if !d.checkResult(t, key, res) {
			wrong++
		}
		if wrong >= 5 {
			t.Fatal("too many wrong results")
		}
	}
	outcome.Notes["outageMs"] = ms(restartedAt.Sub(stoppedAt))
	outcome.Notes["allAnsweredMs"] = ms(allAnswered)
	outcome.Notes["answeredAtBreak"] = uniqueAtBreak
	outcome.Notes["sentAtBreak"] = sentAtBreak
	outcome.Notes["queuedAtBreak"] = queuedAtBreak
	outcome.Notes["reportsRefusedAtBreak"] = heldAtBreak
	outcome.Notes["resentOverdue"] = resent.Load()
	outcome.Notes["registrations"] = engine.RegisterCalls(executorID)
	outcome.Check(t)

	// The executor still stops cleanly after the restart.
	executor.Signal(t, syscall.SIGTERM)
	require.NoError(t, executor.Wait(t, stopTimeout), "the executor exits 0")
	assert.Contains(t, engine.Unregistered(), executorID, "the executor unregistered from the restarted engine")
}

// waitRegistered waits until executorID is registered with engine and
// returns its registration.
func waitRegistered(t *testing.T, engine *grpctest.Engine, executorID string) *gamelanv1.RegisterExecutorRequest {
	t.Helper()
	var reg *gamelanv1.RegisterExecutorRequest
	require.Eventually(t, func() bool {
		var ok bool
		reg, ok = engine.Registration(executorID)
		return ok
	}, startTimeout, 10*time.Millisecond, "%s never registered", executorID)
	return reg
}

// resultKey is a result's task key, runId:nodeId:attempt.
func resultKey(res *gamelanv1.TaskResult) string {
	return fmt.Sprintf("%s:%s:%d", res.GetRunId(), res.GetNodeId(), res.GetAttempt())
}

// gate is open while the engine is up: its dispatch (the test's pushes and
// submissions) waits while it is closed.
type gate struct {
	mu     sync.Mutex
	opened chan struct{} // closed while the gate is open
}

func newGate() *gate {
	g := &gate{opened: make(chan struct{})}
	close(g.opened)
	return g
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
		g.opened = make(chan struct{})
	default:
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
	default:
		close(g.opened)
	}
}

func (g *gate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
		return true
	default:
		return false
	}
}

// wait returns once the gate is open, or ctx's error.
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	opened := g.opened
	g.mu.Unlock()
	select {
	case <-opened:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trackedTask is one task of the load and when it was last sent.
type trackedTask struct {
	amount   float64
	task     *gamelanv1.ExecutionTask       // stream and bidi
	push     *dispatcherpb.ExecutionRequest // push
	lastSent time.Time                      // zero until first sent
}

// dispatcher is the engine's dispatch as the test plays it: it submits
// tasks (queued for the streams, or pushed), notes when each is sent, and
// sends again those whose results are overdue.
type dispatcher struct {
	engine     *grpctest.Engine
	mode       string
	executorID string
	endpoint   string // the executor's push server
	up         *gate
	pushes     chan string // keys to push

	mu    sync.Mutex
	tasks map[string]*trackedTask
}

// submit creates the i-th task, records it as submitted and hands it to
// the engine's dispatch.
func (d *dispatcher) submit(ctx context.Context, outcome *testkit.Outcome, i int) {
	run, node := "run-restart-"+d.mode, fmt.Sprintf("n%05d", i)
	key := run + ":" + node + ":1"
	amount := float64(i)*1.25 + 0.37
	tt := &trackedTask{amount: amount}
	if d.mode == "push" {
		tt.push = &dispatcherpb.ExecutionRequest{
			RunId: run, NodeId: node, Attempt: 1, Token: "token-" + node,
			Variables:      map[string]string{"amount": strconv.FormatFloat(amount, 'f', -1, 64)},
			IdempotencyKey: key, Signature: grpctest.Signature(run, d.executorID),
		}
	} else {
		tt.task = &gamelanv1.ExecutionTask{
			TaskId: "task-" + node, RunId: run, NodeId: node, NodeType: "calculate-tax", Attempt: 1,
			ExecutionToken: "token-" + node, Context: &structpb.Struct{Fields: map[string]*structpb.Value{"amount": structpb.NewNumberValue(amount)}},
		}
	}
	d.mu.Lock()
	d.tasks[key] = tt
	d.mu.Unlock()
	outcome.Submitted(key)
	d.send(ctx, key, tt)
}

// send hands a task to the engine's dispatch: its queue for the streams,
// or the pushers.
func (d *dispatcher) send(ctx context.Context, key string, tt *trackedTask) {
	if d.mode == "push" {
		select {
		case d.pushes <- key:
		case <-ctx.Done():
		}
		return
	}
	d.engine.Enqueue(d.executorID, tt.task)
}

// sent notes that the task of key went out: written on a stream, or
// accepted by a push.
func (d *dispatcher) sent(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if tt := d.tasks[key]; tt != nil {
		tt.lastSent = time.Now()
	}
}

// sentCount is how many tasks went out at least once.
func (d *dispatcher) sentCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, tt := range d.tasks {
		if !tt.lastSent.IsZero() {
			n++
		}
	}
	return n
}

// pushLoop pushes the tasks handed to it, each until the executor accepts
// it, as an engine retries a refused push (503 while the executor is full)
// or a failed call; it pushes only while the engine is up.
func (d *dispatcher) pushLoop(ctx context.Context, t *testing.T) {
	for {
		var key string
		select {
		case key = <-d.pushes:
		case <-ctx.Done():
			return
		}
		d.mu.Lock()
		req := d.tasks[key].push
		d.mu.Unlock()
		for {
			if d.up.wait(ctx) != nil {
				return
			}
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ack, err := d.engine.Push(callCtx, d.endpoint, req)
			cancel()
			if err == nil && ack.GetAccepted() {
				d.sent(key)
				break
			}
			if err == nil && ack.GetCode() == 400 {
				t.Errorf("push of %s refused as invalid: %s", key, ack.GetMessage())
				break
			}
			select { // the engine's retry backoff
			case <-time.After(20 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}
}

// resendOverdue sends again, while the engine is up, every task without a
// result overdueAfter after it was last sent, counting the re-sends.
func (d *dispatcher) resendOverdue(ctx context.Context, resent *atomic.Int64) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		if !d.up.isOpen() {
			continue
		}
		answered := d.engine.UniqueResults()
		now := time.Now()
		var overdue []string
		d.mu.Lock()
		for key, tt := range d.tasks {
			if answered[key] == nil && !tt.lastSent.IsZero() && now.Sub(tt.lastSent) > overdueAfter {
				tt.lastSent = now // not again before it is overdue again
				overdue = append(overdue, key)
			}
		}
		tasks := maps.Clone(d.tasks)
		d.mu.Unlock()
		for _, key := range overdue {
			resent.Add(1)
			d.send(ctx, key, tasks[key])
		}
	}
}

// checkResult asserts that res completed the calculate-tax task of key
// with its amount, echoing its identity.
func (d *dispatcher) checkResult(t *testing.T, key string, res *gamelanv1.TaskResult) bool {
	t.Helper()
	d.mu.Lock()
	tt := d.tasks[key]
	d.mu.Unlock()
	if !assert.NotNil(t, tt, "a result for %s, never submitted", key) {
		return false
	}
	out := res.GetOutput().AsMap()
	tax, _ := out["tax"].(float64)
	ok := assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%s: %v", key, res.GetError())
	ok = assert.InDelta(t, tt.amount*0.1, tax, 1e-9, "%s: tax of %v", key, tt.amount) && ok
	ok = assert.Equal(t, "token-"+res.GetNodeId(), res.GetExecutionToken(), "%s: token", key) && ok
	return ok
}

// restartTap is test-side instrumentation of the engine, installed as a
// stream interceptor: it tells onSend of every task written on a stream,
// and while hold is set refuses ReportResults (after nothing was read), so
// that the executor keeps those results and retries them.
type restartTap struct {
	hold   atomic.Bool
	held   atomic.Int64 // ReportResults calls refused
	onSend func(key string)
}

func (tap *restartTap) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod == gamelanv1.ExecutorService_ReportResults_FullMethodName && tap.hold.Load() {
		tap.held.Add(1)
		return status.Error(codes.Unavailable, heldMarker)
	}
	return handler(srv, &sendTap{ServerStream: ss, tap: tap})
}

// sendTap reports every task its stream writes.
type sendTap struct {
	grpc.ServerStream
	tap *restartTap
}

func (s *sendTap) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	var task *gamelanv1.ExecutionTask
	switch msg := m.(type) {
	case *gamelanv1.ExecutionTask:
		task = msg
	case *gamelanv1.EngineMessage:
		task = msg.GetTask()
	}
	if err == nil && task != nil && s.tap.onSend != nil {
		s.tap.onSend(fmt.Sprintf("%s:%s:%d", task.GetRunId(), task.GetNodeId(), task.GetAttempt()))
	}
	return err
}
