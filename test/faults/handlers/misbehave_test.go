package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/test/testkit"
)

// Part 1 of issue 14: handlers that misbehave. Each scenario hosts one
// misbehaving type beside steady, a well-behaved type, in a service pulling
// both over StreamTasks (one stream per type), and checks that every task is
// answered exactly once with the right status and code, that steady keeps
// its throughput (measured alone first, then beside the misbehaving type),
// that the process keeps its workers, and that a graceful stop ends within
// the deadline the README promises.
//
// What the runtime promises for a handler that ignores its context
// (README, "Execution"; docs/architecture.md, step 4 and the lifecycle;
// internal/app/worker.go, the worker's watchdog; internal/app/invoke.go):
// once the handler has not returned 100 ms after its deadline, the task is
// answered FAILED TIMEOUT and the worker moves on to the next task; the
// handler keeps its type's slot (MaxConcurrentTasks) until it returns, so
// such handlers never number more than MaxConcurrentTasks per type. That
// is the bound on what a deaf or hung type can leak: per abandoned handler,
// its goroutine (the worker it ran on, replaced by a new one) and whatever
// it holds. When every slot of a type is held so, its tasks are
// answered FAILED HANDLERS_STALLED (retryable) without running, until one
// returns. At shutdown the runtime waits for such handlers at most 10 s
// (its call timeout) before running Cleanup hooks anyway.

// The well-behaved type beside every misbehaving one: 2 at a time, 20 ms a
// task, so about 100 tasks/s; steadyBatch tasks make one throughput sample.
//
// Its throughput beside the misbehaving type is measured and noted against
// its baseline, but not asserted: on a machine shared with other work the
// two samples, seconds apart, can differ several times over for reasons of
// the machine's. What is asserted is what throughput follows from, and what
// a misbehaving type could take away: every steady task completes, and
// steady runs its MaxConcurrentTasks at once (a task's duration being
// fixed, its full concurrency is its full throughput), which it cannot if
// the misbehaving handlers hold the workers it needs.
const (
	steadyType  = "steady"
	steadyMax   = 2
	steadyWork  = 20 * time.Millisecond
	steadyBatch = 60
)

// pair is a running service hosting steady and one misbehaving type.
type pair struct {
	t       *testing.T
	engine  *grpctest.Engine
	svc     *runningService
	steady  *tally
	outcome *testkit.Outcome
}

// startPair starts a service with workers handlers at once, hosting steady
// and bad, and waits until both types' streams are open.
func startPair(t *testing.T, scenario string, workers int, bad executor.Executor) *pair {
	t.Helper()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	p := &pair{t: t, engine: engine, steady: newTally(), outcome: &testkit.Outcome{Scenario: scenario, Notes: map[string]any{}}}
	steady := steadyHandler{typ: steadyType, max: steadyMax, work: steadyWork, tally: p.steady}
	p.svc = startService(t, engine, serviceEnv(addr, "stream", workers, 16), steady, bad)
	p.svc.waitServing(t, true, steadyType, bad.Descriptor().Type)
	return p
}

// enqueue queues tasks of typ for the service's stream, counting each as
// submitted.
func (p *pair) enqueue(typ string, tasks ...*gamelanv1.ExecutionTask) []string {
	keys := make([]string, len(tasks))
	for i, task := range tasks {
		keys[i] = key(task.GetRunId(), task.GetNodeId())
	}
	p.outcome.Submitted(keys...)
	p.engine.Enqueue(executorID(typ), tasks...)
	return keys
}

// steadyRate runs a batch of steady tasks under run, checks that each
// completed, and returns their throughput in tasks per second.
func (p *pair) steadyRate(run string) float64 {
	t := p.t
	t.Helper()
	tasks := make([]*gamelanv1.ExecutionTask, steadyBatch)
	for i := range tasks {
		tasks[i] = streamTask(t, run, fmt.Sprintf("s-%03d", i), steadyType, 0, nil)
	}
	began := time.Now()
	keys := p.enqueue(steadyType, tasks...)
	results := waitResults(t, p.engine, keys)
	elapsed := time.Since(began)
	for _, k := range keys {
		assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, results[k].GetStatus(), "%s: %v", k, results[k].GetError())
	}
	return rate(steadyBatch, elapsed)
}

// steadyBeside runs a batch of steady tasks beside the misbehaving type,
// asserts that steady ran its full concurrency meanwhile, and notes its
// throughput against baseline.
func (p *pair) steadyBeside(baseline float64) {
	p.t.Helper()
	p.steady.peak.Store(0)
	beside := p.steadyRate("run-beside")
	peak := p.steady.peak.Load()
	p.outcome.Notes["steadyBaselinePerSec"] = round2(baseline)
	p.outcome.Notes["steadyBesidePerSec"] = round2(beside)
	p.outcome.Notes["steadyShare"] = round2(beside / baseline)
	p.outcome.Notes["steadyPeakBeside"] = peak
	assert.EqualValues(p.t, steadyMax, peak,
		"steady never ran its %d handlers at once beside the misbehaving type: workers were taken from it", steadyMax)
}

// stopWithinGrace stops the service and asserts that the stop ended within
// the grace period the README promises, noting how long it took.
func (p *pair) stopWithinGrace() time.Duration {
	p.t.Helper()
	took, err := p.svc.stop(p.t)
	require.NoError(p.t, err)
	p.outcome.Notes["stopMs"] = took.Milliseconds()
	assert.LessOrEqual(p.t, took, stopGrace, "the stop took longer than SHUTDOWN + FLUSH + 15 s")
	return took
}

// finish counts every result the engine received and checks the outcome:
// nothing lost, nothing answered twice.
func (p *pair) finish() {
	p.t.Helper()
	countAnswers(p.outcome, p.engine)
	f := p.outcome.Check(p.t)
	assert.Zero(p.t, f.Duplicates, "tasks answered more than once")
}

// requireFailed asserts that res is FAILED with code and the retryable flag.
func requireFailed(t *testing.T, res *gamelanv1.TaskResult, code string, wantRetryable bool) {
	t.Helper()
	require.NotNil(t, res)
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, res.GetStatus(), "%s: %v", res.GetNodeId(), res.GetError())
	assert.Equal(t, code, res.GetError().GetCode(), "%s: %v", res.GetNodeId(), res.GetError())
	assert.Equal(t, wantRetryable, retryable(res), "%s: retryable flag of %s", res.GetNodeId(), code)
	assert.Equal(t, "token-"+res.GetNodeId(), res.GetExecutionToken(), "the result echoes the task's token")
}

// answeredAfter returns how long after its handler started res was
// decided (its completed_at).
func answeredAfter(t *testing.T, c *tally, res *gamelanv1.TaskResult) time.Duration {
	t.Helper()
	started, ok := c.startedAt(res.GetNodeId())
	require.True(t, ok, "the handler of %s never started", res.GetNodeId())
	return res.GetCompletedAt().AsTime().Sub(started)
}

// TestSlowHandlerIsAnsweredAtItsTimeout: a handler that honours its
// context but needs a minute for tasks with a 1 s timeout. Each is
// answered FAILED TIMEOUT, retryable (docs/protocol.md, 3.4), at about its
// deadline; steady keeps its throughput meanwhile (the slow handlers hold
// two of the four workers, which is what running handlers do); the slots
// come back, and a task the slow type can finish in time completes.
func TestSlowHandlerIsAnsweredAtItsTimeout(t *testing.T) {
	t.Parallel()
	slow := slowHandler{typ: "slow", max: 2, tally: newTally()}
	p := startPair(t, "handler slower than its timeout", 4, slow)

	baseline := p.steadyRate("run-baseline")
	var tasks []*gamelanv1.ExecutionTask
	for i := range 4 {
		tasks = append(tasks, streamTask(t, "run-slow", fmt.Sprintf("slow-%d", i), slow.typ, 1, nil))
	}
	slowKeys := p.enqueue(slow.typ, tasks...)
	require.Eventually(t, func() bool { return slow.entered.Load() >= 2 }, waitLimit, tick, "the slow handlers never started")
	p.steadyBeside(baseline)

	results := waitResults(t, p.engine, slowKeys)
	faultEnded := time.Now()
	var latest time.Duration
	for _, k := range slowKeys {
		res := results[k]
		requireFailed(t, res, executor.CodeTimeout, true)
		after := answeredAfter(t, slow.tally, res)
		latest = max(latest, after)
		assert.GreaterOrEqual(t, after, 900*time.Millisecond, "%s answered before its 1 s deadline", k)
		assert.Less(t, after, 20*time.Second, "%s answered long after its 1 s deadline", k)
	}
	p.outcome.Notes["timeoutAnsweredAfterMs"] = latest.Milliseconds()
	// A handler that returns at its deadline is not one that ignores it:
	// the two tasks queued behind the first two ran (and timed out above)
	// rather than being answered HANDLERS_STALLED. How many handlers were
	// reported abandoned is noted (0 unless the machine froze the process
	// for longer than the runtime's 100 ms grace).
	p.outcome.Notes["reportedAbandoned"] = p.svc.metrics(t)[abandonedSeries(slow.typ)]

	// The slots come back: the handlers honoured their context and returned.
	require.Eventually(t, func() bool { return slow.running() == 0 }, waitLimit, tick)
	quick := p.enqueue(slow.typ, streamTask(t, "run-slow", "slow-quick", slow.typ, 10, map[string]any{"workMs": 10}))
	res := waitResults(t, p.engine, quick)[quick[0]]
	p.outcome.Recovery = time.Since(faultEnded)
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%v", res.GetError())
	require.Eventually(t, func() bool { return p.svc.metrics(t)[runningSeries(slow.typ)] == 0 }, waitLimit, tick)

	p.stopWithinGrace()
	p.finish()
}

// TestPanickingHandlerIsAnsweredAndLogged: a handler that panics with a
// 64 KiB string, an error value, or a runtime error. Each task is answered
// FAILED PANIC (not retryable) with the panic value in the message, cut to
// 4 KiB, and the stack in stack_trace, cut to 32 KiB; the service stays
// live, steady keeps its throughput, and the next task of the panicking type
// that does not panic completes. Each panic is logged on its task's
// "task finished" line with its value and the top of its stack, every value
// cut to 1 KiB.
func TestPanickingHandlerIsAnsweredAndLogged(t *testing.T) {
	t.Parallel()
	panicky := panickyHandler{typ: "panicky", max: 2, tally: newTally()}
	p := startPair(t, "handler panics", 4, panicky)

	baseline := p.steadyRate("run-baseline")
	var tasks []*gamelanv1.ExecutionTask
	for i := range 12 {
		kind := []string{"huge", "error", "runtime"}[i%3]
		tasks = append(tasks, streamTask(t, "run-panic", fmt.Sprintf("panic-%s-%d", kind, i), panicky.typ, 0, map[string]any{"panic": kind}))
	}
	panicKeys := p.enqueue(panicky.typ, tasks...)
	p.steadyBeside(baseline)

	results := waitResults(t, p.engine, panicKeys)
	faultEnded := time.Now()
	longestStack := 0
	for _, k := range panicKeys {
		res := results[k]
		requireFailed(t, res, executor.CodePanic, false)
		msg, stack := res.GetError().GetMessage(), res.GetError().GetStackTrace()
		assert.Contains(t, msg, panicValue(res.GetNodeId()), "%s: the message names the panic value", k)
		// Cut to the bound, plus the marker saying how much was cut.
		assert.LessOrEqual(t, len(msg), domain.MaxErrorMessageBytes+clipMarkerBytes, "%s: message not bounded", k)
		assert.Contains(t, stack, "panickyHandler.Execute", "%s: the stack shows where the handler panicked", k)
		assert.LessOrEqual(t, len(stack), domain.MaxStackTraceBytes+clipMarkerBytes, "%s: stack not bounded", k)
		longestStack = max(longestStack, len(stack))
	}
	p.outcome.Notes["longestStackBytes"] = longestStack
	assert.Equal(t, http.StatusOK, p.svc.status("/q/health/live"), "the service is not live after the panics")
	assert.False(t, p.svc.exited(), "the service stopped")

	// The type still serves: a task that does not panic completes.
	calm := p.enqueue(panicky.typ, streamTask(t, "run-panic", "calm", panicky.typ, 0, map[string]any{"panic": "none"}))
	res := waitResults(t, p.engine, calm)[calm[0]]
	p.outcome.Recovery = time.Since(faultEnded)
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%v", res.GetError())

	p.stopWithinGrace()
	checkPanicLogs(t, p.svc.logs, len(panicKeys))
	p.finish()
}

// clipMarkerBytes is room for the marker domain.Clip appends to what it
// cuts: "…(N more bytes)".
const clipMarkerBytes = 32

// panicValue is what the panic of the task node must be reported with:
// the runtime's own words for a runtime error, else the value's start.
func panicValue(node string) string {
	if strings.Contains(node, "runtime") {
		return "assignment to entry in nil map"
	}
	return panicMarker
}

// checkPanicLogs asserts that each of the n panics has a "task finished"
// line with code PANIC carrying the panic value and the top of the stack,
// and that no value of any line exceeds 1 KiB (plus the marker saying it
// was cut).
func checkPanicLogs(t *testing.T, logs *logLines, n int) {
	t.Helper()
	const maxValue = 1024 + clipMarkerBytes // telemetry.MaxLogValueBytes, and the clip marker
	panics := 0
	for _, line := range logs.with("task finished") {
		if line["code"] != executor.CodePanic {
			continue
		}
		panics++
		errText, _ := line["error"].(string)
		stack, _ := line["stack"].(string)
		node, _ := line["node_id"].(string)
		assert.Contains(t, errText, panicValue(node), "the log line names the panic value: %v", line)
		assert.Contains(t, stack, "panickyHandler.Execute", "the log line shows where the handler panicked: %v", line)
	}
	assert.Equal(t, n, panics, "panics logged")
	for _, raw := range logs.rawLines() {
		var fields map[string]any
		if !assert.NoError(t, jsonUnmarshal(raw, &fields), "a log line is not JSON: %q", raw) {
			continue
		}
		for name, v := range fields {
			if s, ok := v.(string); ok {
				assert.LessOrEqual(t, len(s), maxValue, "log value %q of %d bytes is not bounded", name, len(s))
			}
		}
	}
}

// TestDeafHandlerIsAbandonedAtItsDeadline: a handler that ignores its
// context and blocks until the test lets it go. Its tasks are answered
// FAILED TIMEOUT at their 1 s deadline while the handlers still run; the
// workers move on (with THREAD_POOL_SIZE 2, steady could not run at all if
// the two deaf handlers still held workers, and it keeps its throughput);
// the handlers keep their type's two slots (tasks_running says 2), so the
// type is stalled and its next tasks are answered FAILED HANDLERS_STALLED,
// retryable, without running: never more than two deaf handlers at once.
// Once they are let go the slots come back and the type completes tasks
// again; Recovery is the time from letting them go to that first result.
func TestDeafHandlerIsAbandonedAtItsDeadline(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	deaf := deafHandler{typ: "deaf", max: 2, gate: gate, tally: newTally()}
	p := startPair(t, "handler ignores its context", 2, deaf)
	released := false
	t.Cleanup(func() {
		if !released {
			close(gate)
		}
	})

	baseline := p.steadyRate("run-baseline")
	deadKeys := p.enqueue(deaf.typ,
		streamTask(t, "run-deaf", "deaf-1", deaf.typ, 1, nil),
		streamTask(t, "run-deaf", "deaf-2", deaf.typ, 1, nil))
	require.Eventually(t, func() bool { return deaf.entered.Load() == 2 }, waitLimit, tick, "the deaf handlers never started")
	// Queued behind them: once both are abandoned, the type is stalled and
	// this task is answered without running.
	behind := p.enqueue(deaf.typ, streamTask(t, "run-deaf", "behind", deaf.typ, 1, nil))
	results := waitResults(t, p.engine, append(deadKeys, behind...))
	var latest time.Duration
	for _, k := range deadKeys {
		res := results[k]
		requireFailed(t, res, executor.CodeTimeout, true)
		after := answeredAfter(t, deaf.tally, res)
		latest = max(latest, after)
		assert.GreaterOrEqual(t, after, 900*time.Millisecond, "%s answered before its deadline", k)
		assert.Less(t, after, 20*time.Second, "%s not answered at its deadline", k)
	}
	p.outcome.Notes["timeoutAnsweredAfterMs"] = latest.Milliseconds()
	requireFailed(t, results[behind[0]], executor.CodeHandlersStalled, true)
	assert.EqualValues(t, 2, deaf.running(), "the deaf handlers were answered for while still running")

	// The worker pool is free, the type's slots are not.
	require.Eventually(t, func() bool {
		m := p.svc.metrics(t)
		return m[runningSeries(deaf.typ)] == 2 && m[abandonedSeries(deaf.typ)] == 2 && m[admittedSeries] == 0
	}, waitLimit, tick, "tasks_running should hold the two deaf handlers, tasks_admitted nothing: %v", p.svc.metrics(t))
	p.steadyBeside(baseline)

	var stalled []*gamelanv1.ExecutionTask
	for i := range 5 {
		stalled = append(stalled, streamTask(t, "run-deaf", fmt.Sprintf("stalled-%d", i), deaf.typ, 1, nil))
	}
	stalledKeys := p.enqueue(deaf.typ, stalled...)
	results = waitResults(t, p.engine, stalledKeys)
	for _, k := range stalledKeys {
		requireFailed(t, results[k], executor.CodeHandlersStalled, true)
	}
	assert.EqualValues(t, 2, deaf.entered.Load(), "a task of the stalled type ran: more deaf handlers than its MaxConcurrentTasks")
	p.outcome.Notes["deafHandlersAtMost"] = deaf.entered.Load()

	letGo := time.Now()
	close(gate)
	released = true
	require.Eventually(t, func() bool {
		return deaf.running() == 0 && p.svc.metrics(t)[runningSeries(deaf.typ)] == 0
	}, waitLimit, tick, "the slots did not come back once the deaf handlers returned")
	after := p.enqueue(deaf.typ, streamTask(t, "run-deaf", "deaf-after", deaf.typ, 5, nil))
	res := waitResults(t, p.engine, after)[after[0]]
	p.outcome.Recovery = time.Since(letGo)
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%v", res.GetError())
	assert.Len(t, p.svc.logs.with("abandoned handler returned"), 2)

	p.stopWithinGrace()
	p.finish()
}

// TestHungHandlerDoesNotBlockShutdown: a handler that never returns (it
// ignores its context and is let go only after the service has stopped),
// three slots. Two tasks with a 1 s timeout are answered FAILED TIMEOUT at
// their deadline and leave two handlers hung for good; a third, with a
// 60 s timeout, is still running; three more wait in the type's queue, as
// every slot is taken. Steady keeps its throughput on the workers left
// (three workers, one held by the running hung handler). A graceful stop
// then ends within the README's grace period: the running hung task is
// cancelled at the drain deadline and answered FAILED SHUTDOWN
// (retryable), the queued ones are answered FAILED SHUTDOWN without
// running, and the stop does not wait for the hung handlers beyond its
// bound. The leak is bounded by MaxConcurrentTasks: three hung handlers,
// never more.
func TestHungHandlerDoesNotBlockShutdown(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // runs after the service's own cleanup
	hung := hungHandler{typ: "hung", max: 3, released: release, tally: newTally()}
	p := startPair(t, "handler never returns", 3, hung)

	baseline := p.steadyRate("run-baseline")
	timedOut := p.enqueue(hung.typ,
		streamTask(t, "run-hung", "hung-1", hung.typ, 1, nil),
		streamTask(t, "run-hung", "hung-2", hung.typ, 1, nil))
	running := p.enqueue(hung.typ, streamTask(t, "run-hung", "hung-long", hung.typ, 60, nil))
	results := waitResults(t, p.engine, timedOut)
	for _, k := range timedOut {
		requireFailed(t, results[k], executor.CodeTimeout, true)
		assert.GreaterOrEqual(t, answeredAfter(t, hung.tally, results[k]), 900*time.Millisecond, "%s answered before its deadline", k)
	}
	require.Eventually(t, func() bool {
		m := p.svc.metrics(t)
		return hung.entered.Load() == 3 && m[runningSeries(hung.typ)] == 3 && m[abandonedSeries(hung.typ)] == 2
	}, waitLimit, tick, "three hung handlers should hold the type's slots: %v", p.svc.metrics(t))
	p.steadyBeside(baseline)

	var waiting []*gamelanv1.ExecutionTask
	for i := range 3 {
		waiting = append(waiting, streamTask(t, "run-hung", fmt.Sprintf("queued-%d", i), hung.typ, 1, nil))
	}
	queued := p.enqueue(hung.typ, waiting...)
	// Admitted: the running hung task and the three queued behind it.
	require.Eventually(t, func() bool { return p.svc.metrics(t)[admittedSeries] == 4 }, waitLimit, tick,
		"the queued tasks were not admitted: %v", p.svc.metrics(t))

	p.stopWithinGrace()
	results = waitResults(t, p.engine, append(running, queued...))
	for _, k := range append(running, queued...) {
		requireFailed(t, results[k], executor.CodeShutdown, true)
	}
	assert.EqualValues(t, 3, hung.entered.Load(), "more hung handlers than the type's MaxConcurrentTasks")
	assert.Zero(t, hung.returned.Load())
	p.outcome.Notes["hungHandlers"] = hung.entered.Load()
	assert.NotEmpty(t, p.svc.logs.with("handlers abandoned at their deadline still run; cleaning up anyway"),
		"the stop should say it gave up waiting for the hung handlers")
	assert.ElementsMatch(t, []string{executorID(steadyType), executorID(hung.typ)}, p.engine.Unregistered(),
		"the stop went on to unregister")
	p.finish()
}

// jsonUnmarshal decodes one log line.
func jsonUnmarshal(line string, v any) error {
	return json.Unmarshal([]byte(strings.TrimSpace(line)), v)
}
