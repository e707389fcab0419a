package app_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

func TestRunsTaskAndSettlesAfterDelivery(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 2)))
	h.run(t)

	st := h.sources["t"].mustOffer(t, task("run1", "calc", 1))
	require.NoError(t, st.wait(t))

	results := h.sinks["t"].all()
	require.Len(t, results, 1, "settled before the result was delivered")
	res := results[0]
	assert.Equal(t, domain.StatusCompleted, res.Status)
	assert.Equal(t, "task-run1-calc", res.TaskID)
	assert.Equal(t, "run1", res.RunID)
	assert.Equal(t, "calc", res.NodeID)
	assert.Equal(t, 1, res.Attempt)
	assert.Equal(t, "tok-calc", res.ExecutionToken)
	assert.Equal(t, "test-calc", res.ExecutorID)
	assert.Equal(t, map[string]any{"node": "calc"}, res.Output)
	assert.False(t, res.CompletedAt.IsZero())
}

func TestPerTypeConcurrencyNeverExceeded(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var running, peak int64
	cfg := testConfig()
	cfg.Workers = 8
	h := newHarness(t, cfg, on("t", gated("slow", 3, gate, &running, &peak, &mu)), on("t", completing("fast", 10)))
	h.run(t)

	var settled []*settlement
	for i := range 10 {
		tk := task("run-slow", fmt.Sprintf("n%d", i), 1)
		tk.ExecutorType = "slow"
		settled = append(settled, h.sources["t"].mustOffer(t, tk))
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return running == 3 }, 5*time.Second, time.Millisecond)

	// Another type is not held up by the slow type's queue.
	fast := h.sources["t"].mustOffer(t, domain.Task{RunID: "run-fast", NodeID: "n", ExecutorType: "fast"})
	require.NoError(t, fast.wait(t))
	assert.Equal(t, 3, h.rt.Stats().Running["slow"])

	close(gate)
	for _, st := range settled {
		require.NoError(t, st.wait(t))
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, int64(3), peak, "more than MaxConcurrentTasks ran at once")
	assert.Len(t, h.sinks["t"].all(), 11)
}

func TestBackpressureRefusesBeyondWorkersAndQueue(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var running, peak int64
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 2, 3
	h := newHarness(t, cfg, on("t", gated("slow", 10, gate, &running, &peak, &mu)))
	h.run(t)
	src := h.sources["t"]

	for i := range 5 {
		src.mustOffer(t, task("run", fmt.Sprintf("n%d", i), 1))
	}
	_, err := src.offer(t, task("run", "n5", 1), false)
	require.ErrorIs(t, err, domain.ErrOverloaded)

	// AwaitCapacity blocks while full...
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err = src.in().AwaitCapacity(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// ...and returns once a task finishes.
	roomCh := make(chan int, 1)
	go func() {
		n, err := src.in().AwaitCapacity(context.Background())
		if err == nil {
			roomCh <- n
		}
	}()
	close(gate)
	select {
	case n := <-roomCh:
		assert.Positive(t, n)
	case <-time.After(5 * time.Second):
		t.Fatal("AwaitCapacity did not return after tasks finished")
	}
	h.sinks["t"].waitResults(t, 5)
}

// A handler that ignores its context is answered TIMEOUT at its deadline,
// but it still runs, so it keeps its type's slot until it returns: handlers
// that ignore their deadline never pile up beyond MaxConcurrentTasks.
func TestTimeoutAnswersAtOnceAndHoldsTheSlotUntilTheHandlerReturns(t *testing.T) {
	releaseStuck, releaseBlocker := make(chan struct{}), make(chan struct{})
	ignoresContext := funcExecutor{
		desc: domain.Descriptor{Type: "stuck", MaxConcurrentTasks: 2},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			switch task.NodeID {
			case "stuck":
				<-releaseStuck // ignores its context
			case "blocker":
				<-releaseBlocker
			}
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	h := newHarness(t, testConfig(), on("t", ignoresContext))
	h.run(t)

	stuck := task("run", "stuck", 1)
	stuck.Timeout = 20 * time.Millisecond
	stuckSettled := h.sources["t"].mustOffer(t, stuck)
	require.NoError(t, stuckSettled.wait(t), "the timed-out task is answered without waiting for its handler")
	res := h.sinks["t"].byKey(t, "run:stuck:1")
	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeTimeout, res.Error.Code)
	assert.True(t, res.Error.Retryable)

	blocker := h.sources["t"].mustOffer(t, task("run", "blocker", 1)) // takes the second slot
	require.Eventually(t, func() bool { return h.rt.Stats().Running["stuck"] == 2 }, 5*time.Second, time.Millisecond)
	next := h.sources["t"].mustOffer(t, task("run", "next", 1))
	stats := h.rt.Stats()
	assert.Equal(t, 2, stats.Running["stuck"], "the abandoned handler still counts as running")
	assert.Equal(t, 2, stats.Admitted, "next waits for the slot the abandoned handler holds")
	assert.False(t, next.settled(), "next ran beside the abandoned handler, beyond MaxConcurrentTasks")

	close(releaseStuck)
	require.NoError(t, next.wait(t), "the slot was not freed when the handler returned")
	assert.Equal(t, domain.StatusCompleted, h.sinks["t"].byKey(t, "run:next:1").Status)
	close(releaseBlocker)
	require.NoError(t, blocker.wait(t))
	require.Eventually(t, func() bool { return h.rt.Stats().Running["stuck"] == 0 }, 5*time.Second, time.Millisecond)
}

func TestPanicYieldsPanicAndNextTaskRuns(t *testing.T) {
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "fragile", MaxConcurrentTasks: 1},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			if task.NodeID == "boom" {
				var m map[string]int
				m["x"] = 1 // nil map write: a real runtime panic
			}
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	cfg := testConfig()
	cfg.Workers = 1
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)

	h.sources["t"].mustOffer(t, task("run", "boom", 1))
	next := h.sources["t"].mustOffer(t, task("run", "after", 1))

	res := h.sinks["t"].byKey(t, "run:boom:1")
	assert.Equal(t, domain.StatusFailed, res.Status)
	assert.Equal(t, domain.CodePanic, res.Error.Code)
	assert.Contains(t, res.Error.StackTrace, "runtime_test.go")
	require.NoError(t, next.wait(t))
	assert.Equal(t, domain.StatusCompleted, h.sinks["t"].byKey(t, "run:after:1").Status)
	assert.Equal(t, 1, h.rt.Stats().Failed["fragile"])
}

func TestReturnedErrorsBecomeFailedResultsWithCodes(t *testing.T) {
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "err"},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			if task.NodeID == "coded" {
				return nil, fmt.Errorf("charge: %w", &domain.Error{Code: "GATEWAY_DOWN", Message: "no route", Retryable: true})
			}
			return nil, errors.New("disk on fire")
		},
	}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)
	h.sources["t"].mustOffer(t, task("run", "coded", 1))
	h.sources["t"].mustOffer(t, task("run", "plain", 1))

	coded := h.sinks["t"].byKey(t, "run:coded:1")
	assert.Equal(t, "GATEWAY_DOWN", coded.Error.Code)
	assert.True(t, coded.Error.Retryable)
	plain := h.sinks["t"].byKey(t, "run:plain:1")
	assert.Equal(t, domain.CodeExecutionError, plain.Error.Code)
	assert.Equal(t, "disk on fire", plain.Error.Message)
}

func TestDuplicateInFlightRunsOnceAndSettlesBoth(t *testing.T) {
	gate := make(chan struct{})
	var calls atomic.Int64
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "once"},
		run: func(_ context.Context, _ *domain.Task) (*domain.Result, error) {
			calls.Add(1)
			<-gate
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)

	first := h.sources["t"].mustOffer(t, task("run", "n", 1))
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	dup := h.sources["t"].mustOffer(t, task("run", "n", 1))
	assert.False(t, dup.settled())
	close(gate)

	require.NoError(t, first.wait(t))
	require.NoError(t, dup.wait(t))
	assert.Equal(t, int64(1), calls.Load(), "a duplicate of a task in flight ran again")
	assert.Len(t, h.sinks["t"].all(), 1)
}

func TestDuplicateOfFinishedTaskGetsSameResult(t *testing.T) {
	var calls atomic.Int64
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "once"},
		run: func(_ context.Context, _ *domain.Task) (*domain.Result, error) {
			return &domain.Result{Status: domain.StatusCompleted, Output: map[string]any{"call": calls.Add(1)}}, nil
		},
	}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)

	require.NoError(t, h.sources["t"].mustOffer(t, task("run", "n", 1)).wait(t))
	require.NoError(t, h.sources["t"].mustOffer(t, task("run", "n", 1)).wait(t))
	// A new attempt is a new task.
	require.NoError(t, h.sources["t"].mustOffer(t, task("run", "n", 2)).wait(t))

	results := h.sinks["t"].all()
	require.Len(t, results, 3)
	assert.Equal(t, results[0], results[1], "the duplicate did not get the same result")
	assert.Equal(t, int64(2), calls.Load())
	assert.Equal(t, 2, results[2].Attempt)
}

// DedupeCapacity finished tasks are remembered, the least recently used
// forgotten first: a duplicate of a forgotten one runs again.
func TestDedupeRemembersTheLastFinishedTasks(t *testing.T) {
	var calls atomic.Int64
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "counted"},
		run: func(_ context.Context, _ *domain.Task) (*domain.Result, error) {
			return &domain.Result{Status: domain.StatusCompleted, Output: map[string]any{"call": calls.Add(1)}}, nil
		},
	}
	cfg := testConfig()
	cfg.DedupeCapacity = 2
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)
	run := func(node string) {
		t.Helper()
		require.NoError(t, h.sources["t"].mustOffer(t, task("run", node, 1)).wait(t))
	}

	run("a")
	run("b")
	run("a") // remembered: answered again, and now more recent than b
	assert.Equal(t, int64(2), calls.Load(), "a duplicate of a remembered task ran")
	run("c") // forgets b
	run("a")
	assert.Equal(t, int64(3), calls.Load(), "a remembered task ran again, or c did not run")
	run("b")
	assert.Equal(t, int64(4), calls.Load(), "b, the least recently used, was remembered beyond the capacity")
}

func TestCancelRunningTaskYieldsCancelled(t *testing.T) {
	started := make(chan struct{})
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "long"},
		run: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)
	st := h.sources["t"].mustOffer(t, task("run", "n", 1))
	<-started

	assert.True(t, h.sources["t"].in().Cancel("task-run-n", "user aborted"))
	require.NoError(t, st.wait(t))
	res := h.sinks["t"].byKey(t, "run:n:1")
	assert.Equal(t, domain.StatusCancelled, res.Status)
	assert.Equal(t, domain.CodeCancelled, res.Error.Code)
	assert.Equal(t, "user aborted", res.Error.Message)
	assert.False(t, h.sources["t"].in().Cancel("task-run-n", "again"), "a finished task was cancelled")
	assert.False(t, h.sources["t"].in().Cancel("no-such-task", ""))
}

func TestCancelQueuedTaskNeverRuns(t *testing.T) {
	gate := make(chan struct{})
	var ran sync.Map
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "serial", MaxConcurrentTasks: 1},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			ran.Store(task.NodeID, true)
			<-gate
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)
	h.sources["t"].mustOffer(t, task("run", "first", 1))
	queued := h.sources["t"].mustOffer(t, task("run", "queued", 1))
	require.Eventually(t, func() bool { _, ok := ran.Load("first"); return ok }, 5*time.Second, time.Millisecond)

	// Cancel by idempotency key: the queued task is answered while the
	// type's only slot is still busy.
	require.True(t, h.sources["t"].in().Cancel("run:queued:1", ""))
	require.NoError(t, queued.wait(t))
	assert.Equal(t, domain.StatusCancelled, h.sinks["t"].byKey(t, "run:queued:1").Status)
	close(gate)
	h.sinks["t"].byKey(t, "run:first:1")
	_, ranQueued := ran.Load("queued")
	assert.False(t, ranQueued, "a cancelled queued task ran")
}

// TestRouting checks the one routing rule of every transport: declared
// types decide, the executor id the task was sent to is a hint used when it
// agrees, and a contradiction is answered NO_EXECUTOR naming both.
func TestRouting(t *testing.T) {
	tax := completing("calculate-tax", 5)
	mail := funcExecutor{desc: domain.Descriptor{Type: "notification-sender", SupportedNodeTypes: []string{"email", "sms"}}, run: tax.run}
	sms := funcExecutor{desc: domain.Descriptor{Type: "sms-gateway", SupportedNodeTypes: []string{"sms"}}, run: tax.run}
	solo := completing("solo", 5)
	h := newHarness(t, testConfig(), on("shared", tax), on("shared", sms), on("shared", mail), on("own", solo))
	h.run(t)

	cases := []struct {
		name     string
		task     domain.Task
		source   string
		executor string   // "" means NO_EXECUTOR
		names    []string // what a NO_EXECUTOR message must name
	}{
		{"executor id alone", domain.Task{NodeID: "x", ExecutorID: "test-notification-sender"}, "shared", "notification-sender", nil},
		{"executor id agreeing with the executor type", domain.Task{NodeID: "x", ExecutorID: "test-calculate-tax", ExecutorType: "calculate-tax"}, "shared", "calculate-tax", nil},
		{"executor id contradicting the executor type", domain.Task{NodeID: "x", ExecutorID: "test-notification-sender", ExecutorType: "calculate-tax"}, "shared", "",
			[]string{`executor type "calculate-tax"`, "test-notification-sender", "notification-sender"}},
		{"executor id contradicting the node type", domain.Task{NodeID: "x", ExecutorID: "test-notification-sender", NodeType: "calculate-tax"}, "shared", "",
			[]string{`node type "calculate-tax"`, "test-notification-sender"}},
		{"executor id contradicting the context node type", domain.Task{NodeID: "x", ExecutorID: "test-calculate-tax", Context: map[string]any{domain.NodeTypeKey: "email"}}, "shared", "",
			[]string{`__node_type__ "email"`, "test-calculate-tax"}},
		{"executor id choosing among supporters of the node type", domain.Task{NodeID: "x", ExecutorID: "test-sms-gateway", NodeType: "sms"}, "shared", "sms-gateway", nil},
		{"executor id not hosted here is ignored", domain.Task{NodeID: "x", ExecutorID: "elsewhere", NodeType: "email"}, "shared", "notification-sender", nil},
		{"executor type", domain.Task{NodeID: "x", ExecutorType: "calculate-tax"}, "shared", "calculate-tax", nil},
		{"executor type and a node type it supports", domain.Task{NodeID: "x", ExecutorType: "notification-sender", NodeType: "sms"}, "shared", "notification-sender", nil},
		{"executor type and a node type it does not support", domain.Task{NodeID: "x", ExecutorType: "calculate-tax", NodeType: "email"}, "shared", "",
			[]string{`executor type "calculate-tax"`, `node type "email"`}},
		{"unknown executor type", domain.Task{NodeID: "x", ExecutorType: "nope"}, "shared", "", []string{`"nope"`}},
		{"node type", domain.Task{NodeID: "x", NodeType: "email"}, "shared", "notification-sender", nil},
		{"node types only a later supporter supports together", domain.Task{NodeID: "x", NodeType: "sms", Context: map[string]any{domain.NodeTypeKey: "email"}}, "shared", "notification-sender", nil},
		{"node types no executor supports together", domain.Task{NodeID: "x", NodeType: "sms", Context: map[string]any{domain.NodeTypeKey: "calculate-tax"}}, "shared", "",
			[]string{`node type "sms"`, `__node_type__ "calculate-tax"`, "together"}},
		{"unknown node type", domain.Task{NodeID: "x", NodeType: "fax"}, "own", "", []string{`"fax"`}},
		{"context node type", domain.Task{NodeID: "x", Context: map[string]any{domain.NodeTypeKey: "email"}}, "shared", "notification-sender", nil},
		{"node id is a node type", domain.Task{NodeID: "calculate-tax"}, "shared", "calculate-tax", nil},
		{"only type on transport", domain.Task{NodeID: "whatever"}, "own", "solo", nil},
		{"ambiguous", domain.Task{NodeID: "whatever"}, "shared", "", []string{`"whatever"`, "3 executor types"}},
	}
	for i, c := range cases {
		c.task.RunID, c.task.Attempt = fmt.Sprintf("route%d", i), 1
		require.NoError(t, h.sources[c.source].mustOffer(t, c.task).wait(t), c.name)
		res := h.sinks[c.source].byKey(t, c.task.Key())
		if c.executor == "" {
			assert.Equal(t, domain.StatusFailed, res.Status, c.name)
			if assert.NotNil(t, res.Error, c.name) {
				assert.Equal(t, domain.CodeNoExecutor, res.Error.Code, c.name)
				for _, name := range c.names {
					assert.Contains(t, res.Error.Message, name, c.name)
				}
			}
			continue
		}
		assert.Equal(t, domain.StatusCompleted, res.Status, c.name)
		assert.Equal(t, "test-"+c.executor, res.ExecutorID, c.name)
	}
}

func TestInvalidTaskIsRefused(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.run(t)
	_, err := h.sources["t"].offer(t, domain.Task{NodeID: "n"}, false)
	require.ErrorIs(t, err, domain.ErrInvalidTask)
	_, err = h.sources["t"].offer(t, domain.Task{RunID: "r"}, false)
	require.ErrorIs(t, err, domain.ErrInvalidTask)
	require.NoError(t, h.sources["t"].mustOffer(t, task("r", "n", 1)).wait(t), "a valid task after refusals was not run")
	assert.Len(t, h.sinks["t"].all(), 1)
}

func TestResultsAreResentUntilAcknowledged(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.sinks["t"].failN = 3
	h.run(t)

	st := h.sources["t"].mustOffer(t, task("run", "n", 1))
	require.NoError(t, st.wait(t))
	assert.Len(t, h.sinks["t"].all(), 1)
	assert.GreaterOrEqual(t, h.rt.Stats().DeliveryRetries, 3)
}

// Results that the engine does not acknowledge back-pressure their own
// transport's intake, without holding a worker: once OutboxSize results
// wait, Offer refuses and AwaitCapacity waits, while workers stay free.
func TestUnacknowledgedResultsPauseTheirIntakeWithoutHoldingWorkers(t *testing.T) {
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize, cfg.OutboxSize, cfg.ResultSenders, cfg.ResultBatchSize = 1, 0, 2, 1, 1
	h := newHarness(t, cfg, on("t", completing("calc", 1)))
	gate := make(chan struct{})
	h.sinks["t"].gate = gate
	h.run(t)
	src := h.sources["t"]

	// n0 is held by the blocked sender, n1 waits in the outbox: the
	// transport's backlog is full, though no worker is busy.
	for i := range 2 {
		require.Eventually(t, func() bool {
			_, err := src.offer(t, task("run", fmt.Sprintf("n%d", i), 1), false)
			return err == nil
		}, 5*time.Second, time.Millisecond)
	}
	require.Eventually(t, func() bool { return h.rt.Stats().Admitted == 0 }, 5*time.Second, time.Millisecond, "a worker is held by the outbox")
	_, err := src.offer(t, task("run", "n2", 1), false)
	require.ErrorIs(t, err, domain.ErrOverloaded)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err = src.in().AwaitCapacity(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "AwaitCapacity promised room while the results back up")

	close(gate)
	h.sinks["t"].waitResults(t, 2)
	free, err := src.in().AwaitCapacity(context.Background())
	require.NoError(t, err)
	assert.Positive(t, free)
	require.NoError(t, src.mustOffer(t, task("run", "n2", 1)).wait(t))
}

func TestRegistersEveryTypeBeforeIntakeStarts(t *testing.T) {
	h := newHarness(t, testConfig(), on("grpc", completing("a", 0)), on("kafka", completing("b", 1)))
	h.control.failReg = 3
	require.Error(t, h.rt.Ready(), "ready before start")
	h.run(t)

	ev := h.events
	for _, src := range []string{"start:grpc", "start:kafka"} {
		for _, reg := range []string{"register:test-a", "register:test-b"} {
			require.NotEqual(t, -1, ev.index(reg), "%s never registered", reg)
			assert.Less(t, ev.index(reg), ev.index(src), "%s started before %s", src, reg)
		}
	}
	require.Eventually(t, func() bool { return h.rt.Ready() == nil }, 5*time.Second, time.Millisecond)
	assert.Equal(t, domain.CommunicationGRPC, h.control.regs["test-a"].CommunicationType)
	assert.Equal(t, domain.DefaultMaxConcurrentTasks, h.control.regs["test-a"].Descriptor.MaxConcurrentTasks,
		"descriptor defaults were not applied")
}

func TestHeartbeatsCarryLoadAndFailuresReregister(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	var mu sync.Mutex
	var running, peak int64
	cfg := testConfig()
	cfg.HeartbeatInterval = 10 * time.Millisecond
	h := newHarness(t, cfg, on("t", gated("busy", 5, gate, &running, &peak, &mu)))
	h.run(t)
	h.sources["t"].mustOffer(t, task("run", "a", 1))
	h.sources["t"].mustOffer(t, task("run", "b", 1))

	require.Eventually(t, func() bool {
		for _, hb := range h.control.lastHeartbeats() {
			if hb.CurrentTasks == 2 && hb.ExecutorID == "test-busy" && hb.Status == domain.HealthHealthy {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond, "no heartbeat reported the two running tasks")

	countRegistrations := func() int {
		n := 0
		for _, e := range h.events.all() {
			if e == "register:test-busy" {
				n++
			}
		}
		return n
	}
	before := countRegistrations()
	h.control.setFailHeartbeats(true)
	require.Eventually(t, func() bool { return countRegistrations() >= before+2 }, 5*time.Second, time.Millisecond,
		"failed heartbeats did not trigger re-registration")

	// One re-registration per failed heartbeat, never a storm.
	h.control.setFailHeartbeats(false)
	ev := h.events.all()
	failures, reregs := 0, 0
	for _, e := range ev {
		switch e {
		case "heartbeat-failed:test-busy":
			failures++
		case "register:test-busy":
			reregs++
		}
	}
	assert.LessOrEqual(t, reregs-before, failures)
}

func TestPeriodicReregistration(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 5 * time.Millisecond
	cfg.ReregisterInterval = 20 * time.Millisecond
	h := newHarness(t, cfg, on("t", completing("calc", 1)))
	h.run(t)
	require.Eventually(t, func() bool {
		n := 0
		for _, e := range h.events.all() {
			if e == "register:test-calc" {
				n++
			}
		}
		return n >= 3
	}, 5*time.Second, time.Millisecond)
}

func TestReadinessFollowsSourceHealth(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.run(t)
	require.Eventually(t, func() bool { return h.rt.Ready() == nil }, 5*time.Second, time.Millisecond)
	h.sources["t"].setHealth(errors.New("stream closed"))
	assert.ErrorContains(t, h.rt.Ready(), "stream closed")
	h.sources["t"].setHealth(nil)
	assert.NoError(t, h.rt.Ready())
}

func TestGracefulStopDeliversInFlightBeforeUnregister(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var running, peak int64
	h := newHarness(t, testConfig(), on("t", gated("work", 10, gate, &running, &peak, &mu)))
	h.run(t)
	var settled []*settlement
	for i := range 5 {
		settled = append(settled, h.sources["t"].mustOffer(t, task("run", fmt.Sprintf("n%d", i), 1)))
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return running == 5 }, 5*time.Second, time.Millisecond)

	stopped := make(chan error, 1)
	go func() { stopped <- h.stop(t) }()
	require.Eventually(t, func() bool { return h.events.index("stop:t") >= 0 }, 5*time.Second, time.Millisecond)
	assert.ErrorContains(t, h.rt.Ready(), "draining")
	_, err := h.sources["t"].offer(t, task("run", "late", 1), false)
	require.ErrorIs(t, err, domain.ErrDraining)

	close(gate)
	require.NoError(t, <-stopped)
	for _, st := range settled {
		require.NoError(t, st.wait(t))
	}
	unregister := h.events.index("unregister:test-work")
	require.NotEqual(t, -1, unregister, "never unregistered")
	for i := range 5 {
		deliver := h.events.index(fmt.Sprintf("deliver:run:n%d:1", i))
		require.NotEqual(t, -1, deliver, "result %d lost", i)
		assert.Less(t, deliver, unregister, "result %d delivered after unregister", i)
	}
	assert.Less(t, h.events.index("stop:t"), unregister)
}

// TestSourcesCloseOnceEveryDeliveryIsSettled checks when the runtime
// closes its sources: a source honours Settle only until Close, so Close
// must come after the last Settle of every delivery (acknowledged, handed
// back, or given up at the flush deadline), after Stop, and once per source.
func TestSourcesCloseOnceEveryDeliveryIsSettled(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var running, peak int64
	cfg := testConfig()
	cfg.FlushTimeout = 200 * time.Millisecond
	h := newHarness(t, cfg, on("a", gated("slow", 1, gate, &running, &peak, &mu)), on("b", completing("quick", 1)))
	h.sinks["b"].failAll = true // b's result is never acknowledged: given up at the flush deadline
	h.run(t)

	// Each Settle records whether a source was already closed when it ran.
	var settledAfterClose []string
	settles := make(chan struct{}, 8)
	offer := func(src *fakeSource, node string, redeliverable bool) {
		in := src.in()
		require.NotNil(t, in)
		tk := task("run", node, 1)
		err := in.Offer(context.Background(), ports.Delivery{Task: &tk, Redeliverable: redeliverable, Settle: func(error) {
			if h.events.index("close:a") >= 0 || h.events.index("close:b") >= 0 {
				mu.Lock()
				settledAfterClose = append(settledAfterClose, node)
				mu.Unlock()
			}
			settles <- struct{}{}
		}})
		require.NoError(t, err)
	}
	offer(h.sources["a"], "running", false)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return running == 1 }, 5*time.Second, time.Millisecond)
	offer(h.sources["a"], "queued", true) // handed back at stop
	offer(h.sources["b"], "undeliverable", false)
	require.Eventually(t, func() bool { return h.sinks["b"].deliverCalls() > 0 }, 5*time.Second, time.Millisecond)

	stopped := make(chan error, 1)
	go func() { stopped <- h.stop(t) }()
	require.Eventually(t, func() bool { return h.events.index("stop:a") >= 0 }, 5*time.Second, time.Millisecond)
	close(gate)
	require.NoError(t, <-stopped)
	for range 3 {
		select {
		case <-settles:
		case <-time.After(5 * time.Second):
			t.Fatal("a delivery was never settled")
		}
	}
	mu.Lock()
	assert.Empty(t, settledAfterClose, "settled after its source was closed: the source no longer honours it")
	mu.Unlock()
	for _, name := range []string{"a", "b"} {
		closed := h.events.index("close:" + name)
		require.NotEqual(t, -1, closed, "source %s never closed", name)
		assert.Less(t, h.events.index("stop:"+name), closed, "source %s closed before it was stopped", name)
		n := 0
		for _, e := range h.events.all() {
			if e == "close:"+name {
				n++
			}
		}
		assert.Equal(t, 1, n, "times source %s was closed", name)
	}
}

// TestSourcesCloseWhenInitializeFails checks that a runtime that never got
// as far as starting its sources still closes them: it owns them from Run on.
func TestSourcesCloseWhenInitializeFails(t *testing.T) {
	ex := &hookedExecutor{funcExecutor: completing("hooked", 1), initErr: errors.New("no database")}
	h := newHarness(t, testConfig(), on("t", ex))
	require.Error(t, h.rt.Run(context.Background()))
	assert.NotEqual(t, -1, h.events.index("close:t"), "source not closed")
	assert.Equal(t, -1, h.events.index("start:t"), "source started although initialization failed")
}

func TestStopHandsBackUnstartedRedeliverableTasks(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var running, peak int64
	h := newHarness(t, testConfig(), on("t", gated("serial", 1, gate, &running, &peak, &mu)))
	h.run(t)
	src := h.sources["t"]
	first, err := src.offer(t, task("run", "first", 1), true)
	require.NoError(t, err)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return running == 1 }, 5*time.Second, time.Millisecond)
	redeliverable, err := src.offer(t, task("run", "kafka", 1), true)
	require.NoError(t, err)
	pushed, err := src.offer(t, task("run", "push", 1), false)
	require.NoError(t, err)

	stopped := make(chan error, 1)
	go func() { stopped <- h.stop(t) }()
	// The redeliverable task is handed back at once, while the first still runs.
	require.ErrorIs(t, redeliverable.wait(t), domain.ErrHandedBack)
	close(gate)
	require.NoError(t, <-stopped)

	require.NoError(t, first.wait(t))
	require.NoError(t, pushed.wait(t), "an accepted push task must run during the drain")
	for _, r := range h.sinks["t"].all() {
		assert.NotEqual(t, "kafka", r.NodeID, "a handed-back task was answered")
	}
	assert.Len(t, h.sinks["t"].all(), 2)
}

func TestDrainDeadlineAnswersShutdown(t *testing.T) {
	ignoresContext := funcExecutor{
		desc: domain.Descriptor{Type: "stuck", MaxConcurrentTasks: 1},
		run: func(context.Context, *domain.Task) (*domain.Result, error) {
			select {}
		},
	}
	cfg := testConfig()
	cfg.DrainTimeout = 30 * time.Millisecond
	h := newHarness(t, cfg, on("t", ignoresContext))
	h.run(t)
	running := h.sources["t"].mustOffer(t, task("run", "running", 1))
	require.Eventually(t, func() bool { return h.rt.Stats().Running["stuck"] == 1 }, 5*time.Second, time.Millisecond)
	queued := h.sources["t"].mustOffer(t, task("run", "queued", 1))

	require.NoError(t, h.stop(t))
	require.NoError(t, running.wait(t))
	require.NoError(t, queued.wait(t))
	for _, key := range []string{"run:running:1", "run:queued:1"} {
		res := h.sinks["t"].byKey(t, key)
		assert.Equal(t, domain.StatusFailed, res.Status, key)
		assert.Equal(t, domain.CodeShutdown, res.Error.Code, key)
		assert.True(t, res.Error.Retryable, key)
	}
}

func TestFlushDeadlineGivesUpUndeliverableResults(t *testing.T) {
	cfg := testConfig()
	cfg.FlushTimeout = 50 * time.Millisecond
	h := newHarness(t, cfg, on("t", completing("calc", 1)))
	h.sinks["t"].failAll = true
	h.run(t)
	st := h.sources["t"].mustOffer(t, task("run", "n", 1))
	require.Eventually(t, func() bool { return h.rt.Stats().DeliveryRetries > 0 }, 5*time.Second, time.Millisecond)

	require.NoError(t, h.stop(t))
	require.ErrorIs(t, st.wait(t), domain.ErrHandedBack, "an unacknowledged result must not be settled as delivered")
	assert.Equal(t, 1, h.rt.Stats().Undelivered)
	assert.NotEqual(t, -1, h.events.index("unregister:test-calc"))
}

func TestResultsReturnThroughTheirOwnTransport(t *testing.T) {
	h := newHarness(t, testConfig(), on("grpc", completing("a", 1)), on("kafka", completing("b", 1)))
	h.run(t)
	// A task for type a arriving over kafka is answered over kafka.
	require.NoError(t, h.sources["kafka"].mustOffer(t, domain.Task{RunID: "r", NodeID: "n", ExecutorType: "a"}).wait(t))
	require.NoError(t, h.sources["grpc"].mustOffer(t, domain.Task{RunID: "r", NodeID: "m", ExecutorType: "b"}).wait(t))
	assert.Equal(t, "n", h.sinks["kafka"].byKey(t, "r:n:0").NodeID)
	assert.Equal(t, "m", h.sinks["grpc"].byKey(t, "r:m:0").NodeID)
	assert.Len(t, h.sinks["kafka"].all(), 1)
	assert.Len(t, h.sinks["grpc"].all(), 1)
}

func TestLifecycleHooks(t *testing.T) {
	ex := &hookedExecutor{funcExecutor: completing("hooked", 1)}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)
	require.NoError(t, h.sources["t"].mustOffer(t, task("r", "n", 1)).wait(t))
	require.NoError(t, h.stop(t))
	assert.Equal(t, []string{"initialize", "before", "after:COMPLETED", "cleanup"}, ex.calls())
}

func TestInitializeFailureStopsStartup(t *testing.T) {
	ex := &hookedExecutor{funcExecutor: completing("hooked", 1), initErr: errors.New("no database")}
	h := newHarness(t, testConfig(), on("t", ex))
	err := h.rt.Run(context.Background())
	require.ErrorContains(t, err, "no database")
	assert.Equal(t, -1, h.events.index("register:test-hooked"), "registered although initialization failed")
}

func TestNewRejectsBadWiring(t *testing.T) {
	src, sink, ctl := newFakeSource(&events{}, "t"), &fakeSink{}, &fakeControl{events: &events{}}
	tr := []app.Transport{{Name: "t", Source: src, Sink: sink}}
	ok := app.Hosted{Executor: completing("a", 1), Registration: domain.Registration{ExecutorID: "id-a"}, Transport: "t"}
	cases := map[string]struct {
		hosted     []app.Hosted
		transports []app.Transport
	}{
		"no executors":      {nil, tr},
		"unknown transport": {[]app.Hosted{{Executor: completing("a", 1), Registration: domain.Registration{ExecutorID: "id"}, Transport: "x"}}, tr},
		"duplicate type":    {[]app.Hosted{ok, {Executor: completing("a", 1), Registration: domain.Registration{ExecutorID: "id-b"}, Transport: "t"}}, tr},
		"bad executor id":   {[]app.Hosted{{Executor: completing("a", 1), Registration: domain.Registration{ExecutorID: "bad id"}, Transport: "t"}}, tr},
		"idle transport":    {[]app.Hosted{ok}, append(tr, app.Transport{Name: "u", Source: src, Sink: sink})},
	}
	for name, c := range cases {
		_, err := app.New(testConfig(), c.hosted, c.transports, ctl, ctl, nil)
		assert.Error(t, err, name)
	}
	_, err := app.New(app.Config{Workers: -1}, []app.Hosted{ok}, tr, ctl, ctl, nil)
	assert.ErrorContains(t, err, "workers")
}

type hookedExecutor struct {
	funcExecutor
	initErr error
	mu      sync.Mutex
	log     []string
}

func (h *hookedExecutor) record(s string) { h.mu.Lock(); h.log = append(h.log, s); h.mu.Unlock() }
func (h *hookedExecutor) calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.log...)
}
func (h *hookedExecutor) Initialize(context.Context) error { h.record("initialize"); return h.initErr }
func (h *hookedExecutor) Cleanup(context.Context) error    { h.record("cleanup"); return nil }
func (h *hookedExecutor) BeforeExecute(context.Context, *domain.Task) error {
	h.record("before")
	return nil
}
func (h *hookedExecutor) AfterExecute(_ context.Context, _ *domain.Task, r *domain.Result) {
	h.record("after:" + string(r.Status))
}

// recordingObserver counts what the runtime reports for metrics.
type recordingObserver struct {
	mu           sync.Mutex
	finished     map[string]int // "type/status"
	refused      map[string]int // "transport/reason"
	delivered    int
	retried      int
	deadLettered int
	abandoned    int
}

func (o *recordingObserver) TaskFinished(typ string, status domain.Status, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished[typ+"/"+string(status)]++
}
func (o *recordingObserver) TaskRefused(transport, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refused[transport+"/"+reason]++
}
func (o *recordingObserver) ResultsDelivered(_ string, n int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.delivered += n
}
func (o *recordingObserver) DeliveryRetried(string)         { o.mu.Lock(); o.retried++; o.mu.Unlock() }
func (o *recordingObserver) ResultsUndelivered(string, int) {}
func (o *recordingObserver) ResultDeadLettered(string)      { o.mu.Lock(); o.deadLettered++; o.mu.Unlock() }
func (o *recordingObserver) HandlerAbandoned(string)        { o.mu.Lock(); o.abandoned++; o.mu.Unlock() }
func (o *recordingObserver) HeartbeatFailed(string)         {}
func (o *recordingObserver) RegistrationFailed(string)      {}

func TestObserverSeesTasksRefusalsAndDeliveries(t *testing.T) {
	obs := &recordingObserver{finished: map[string]int{}, refused: map[string]int{}}
	cfg := testConfig()
	cfg.Observer = obs
	h := newHarness(t, cfg, on("t", completing("calc", 1)))
	h.sinks["t"].failN = 1
	h.run(t)

	require.NoError(t, h.sources["t"].mustOffer(t, task("r", "a", 1)).wait(t))
	_, err := h.sources["t"].offer(t, domain.Task{NodeID: "no-run"}, false)
	require.ErrorIs(t, err, domain.ErrInvalidTask)

	obs.mu.Lock()
	defer obs.mu.Unlock()
	assert.Equal(t, 1, obs.finished["calc/COMPLETED"])
	assert.Equal(t, 1, obs.refused["t/invalid"])
	assert.Equal(t, 1, obs.delivered)
	assert.Equal(t, 1, obs.retried)
}
