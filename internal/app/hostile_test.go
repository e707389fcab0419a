package app_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// The tests below hold the runtime to its promises against a hostile or
// unlucky engine: invalid tasks, keys that name other runs, results the
// engine refuses for good, a transport whose results cannot be delivered.

// offerDelivery offers d through the source's intake, with a settlement.
func (s *fakeSource) offerDelivery(t *testing.T, d ports.Delivery) (*settlement, error) {
	t.Helper()
	st := newSettlement()
	d.Settle = st.settle
	return st, s.in().Offer(context.Background(), d)
}

func TestPulledInvalidTaskIsAnsweredInvalidTaskAndNeverRun(t *testing.T) {
	var ran atomic.Int64
	calc := completing("calc", 1)
	counting := funcExecutor{desc: calc.desc, run: func(ctx context.Context, task *domain.Task) (*domain.Result, error) {
		ran.Add(1)
		return calc.run(ctx, task)
	}}
	h := newHarness(t, testConfig(), on("t", counting))
	h.run(t)
	src := h.sources["t"]

	for name, bad := range map[string]domain.Task{
		"attempt zero":                 task("run-a", "n", 0),
		"another run's key":            withKey(task("run-b", "n", 1), "shared:n:1"),
		"executor id against the rule": withExecutorID(task("run-c", "n", 1), "tax service"),
	} {
		st, err := src.offerDelivery(t, ports.Delivery{Task: &bad})
		require.NoError(t, err, "%s: a pulled task that a result can name is taken, to be answered", name)
		require.NoError(t, st.wait(t), name)
		res := h.sinks["t"].byKey(t, bad.Key())
		assert.Equal(t, domain.StatusFailed, res.Status, name)
		require.NotNil(t, res.Error, name)
		assert.Equal(t, domain.CodeInvalidTask, res.Error.Code, name)
		assert.Equal(t, bad.RunID, res.RunID, "%s: answered with its own identity", name)
		assert.Equal(t, bad.ExecutionToken, res.ExecutionToken, name)
	}
	assert.Zero(t, ran.Load(), "an invalid task ran")

	// An invalid task is not remembered: the valid task with the same
	// identity still runs.
	require.NoError(t, src.mustOffer(t, task("run-b", "n", 1)).wait(t))
	assert.EqualValues(t, 1, ran.Load())
}

func TestPushedInvalidTaskIsRefusedWithTheRule(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.run(t)
	bad := withKey(task("y", "tax-node", 1), "shared:tax-node:1")
	_, err := h.sources["t"].offerDelivery(t, ports.Delivery{Task: &bad, Refusable: true})
	require.ErrorIs(t, err, domain.ErrInvalidTask)
	assert.Contains(t, err.Error(), `idempotency key "shared:tax-node:1" is not "y:tax-node:1"`)
	assert.Empty(t, h.sinks["t"].all(), "a refused task is not answered")
}

func TestUnaddressableTaskIsRefusedEvenWhenPulled(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.run(t)
	for name, bad := range map[string]domain.Task{
		"huge run id":          task(strings.Repeat("r", 2<<20), "n", 1),
		"attempt over 32 bits": task("r", "n", domain.MaxAttempt+1),
		"no node id":           task("r", "", 1),
	} {
		_, err := h.sources["t"].offerDelivery(t, ports.Delivery{Task: &bad})
		require.ErrorIs(t, err, domain.ErrInvalidTask, name)
		assert.Less(t, len(err.Error()), 300, "%s: the refusal quotes values clipped", name)
	}
	require.NoError(t, h.sources["t"].mustOffer(t, task("r", "n", 1)).wait(t), "the next valid task runs")
	assert.Len(t, h.sinks["t"].all(), 1)
}

func TestMalformedDeliveryIsAnsweredWithItsReason(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.run(t)
	identity := domain.Task{RunID: "r", NodeID: "n", Attempt: 2, ExecutionToken: "tok"}
	st, err := h.sources["t"].offerDelivery(t, ports.Delivery{Task: &identity, Malformed: errors.New("context is not a JSON object")})
	require.NoError(t, err)
	require.NoError(t, st.wait(t))
	res := h.sinks["t"].byKey(t, "r:n:2")
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeInvalidTask, res.Error.Code)
	assert.Contains(t, res.Error.Message, "context is not a JSON object")
	assert.Equal(t, "tok", res.ExecutionToken)
}

// Issue 10, failure 2: run y carried run x's idempotency key and was
// answered with x's result. Keys are now the identity itself.
func TestTaskIsNeverAnsweredWithAnotherRunsResult(t *testing.T) {
	amounts := funcExecutor{desc: domain.Descriptor{Type: "calc", MaxConcurrentTasks: 2},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			return &domain.Result{Output: map[string]any{"amount": task.Context["amount"]}}, nil
		}}
	h := newHarness(t, testConfig(), on("t", amounts))
	h.run(t)
	x := task("x", "tax-node", 1)
	x.Context = map[string]any{"amount": 100}
	require.NoError(t, h.sources["t"].mustOffer(t, x).wait(t))
	y := withKey(task("y", "tax-node", 1), x.Key())
	y.Context = map[string]any{"amount": 999}
	st, err := h.sources["t"].offerDelivery(t, ports.Delivery{Task: &y})
	require.NoError(t, err)
	require.NoError(t, st.wait(t))
	res := h.sinks["t"].byKey(t, "y:tax-node:1")
	assert.Equal(t, domain.StatusFailed, res.Status, "y must not get x's result: %+v", res)
	assert.NotEqual(t, 100, res.Output["amount"])
}

// Issue 10, failure 3: one result the engine refuses for good must not hold
// back the others in its batch, nor be retried for ever.
func TestResultRefusedForGoodIsIsolatedAndReplaced(t *testing.T) {
	cfg := testConfig()
	cfg.ResultSenders, cfg.ResultBatchSize = 1, 16
	h := newHarness(t, cfg, on("t", completing("calc", 8)))
	gate := make(chan struct{})
	sink := h.sinks["t"]
	sink.gate = gate
	sink.rejects = func(r domain.Result) bool { return r.RunID == "poison" && r.Error == nil }
	h.run(t)

	var settled []*settlement
	for i := range 8 {
		run := "ok"
		if i == 5 {
			run = "poison"
		}
		settled = append(settled, h.sources["t"].mustOffer(t, task(run, fmt.Sprintf("n%d", i), 1)))
	}
	require.Eventually(t, func() bool { return h.rt.Stats().Admitted == 0 }, 5*time.Second, time.Millisecond)
	close(gate) // the first batch holds several results, the poison among them
	for i, st := range settled {
		require.NoError(t, st.wait(t), "n%d", i)
	}
	results := sink.all()
	require.Len(t, results, 8, "every task answered once")
	poison := sink.byKey(t, "poison:n5:1")
	assert.Equal(t, domain.StatusFailed, poison.Status)
	require.NotNil(t, poison.Error)
	assert.Equal(t, domain.CodeResultRejected, poison.Error.Code)
	assert.Contains(t, poison.Error.Message, "message larger than the engine takes")
	assert.Nil(t, poison.Output)
}

// A result refused alone, before any evidence, must not hold its sender:
// the results queued behind it go first, and their acknowledgements pin
// the refusal on it.
func TestResultRefusedAloneWaitsBehindTheOthers(t *testing.T) {
	cfg := testConfig()
	cfg.ResultSenders, cfg.ResultBatchSize = 1, 16
	h := newHarness(t, cfg, on("t", completing("calc", 8)))
	gate := make(chan struct{})
	sink := h.sinks["t"]
	sink.gate = gate
	sink.rejects = func(r domain.Result) bool { return r.RunID == "poison" && r.Error == nil }
	h.run(t)

	poison := h.sources["t"].mustOffer(t, task("poison", "n", 1))
	require.Eventually(t, func() bool { return sink.deliverCalls() == 1 }, 5*time.Second, time.Millisecond,
		"the sender holds the poison, alone in its batch")
	var others []*settlement
	for i := range 4 {
		others = append(others, h.sources["t"].mustOffer(t, task("ok", fmt.Sprintf("n%d", i), 1)))
	}
	require.Eventually(t, func() bool { return h.rt.Stats().Admitted == 0 }, 5*time.Second, time.Millisecond)
	close(gate)
	for i, st := range others {
		require.NoError(t, st.wait(t), "n%d is delivered although the poison came first", i)
	}
	require.NoError(t, poison.wait(t), "its minimal FAILED form is acknowledged in its place")
	replaced := sink.byKey(t, "poison:n:1")
	require.NotNil(t, replaced.Error)
	assert.Equal(t, domain.CodeResultRejected, replaced.Error.Code)
}

// A result refused alone, with nothing else to deliver and nothing
// acknowledged since, is probed with its minimal FAILED form: taken, it
// stands in for the result instead of the result being retried for ever.
func TestLoneResultRefusedIsProbedWithItsMinimalForm(t *testing.T) {
	cfg := testConfig()
	cfg.ResultSenders = 1
	h := newHarness(t, cfg, on("t", completing("calc", 2)))
	sink := h.sinks["t"]
	sink.rejects = func(r domain.Result) bool { return r.RunID == "poison" && r.Error == nil }
	h.run(t)

	require.NoError(t, h.sources["t"].mustOffer(t, task("ok", "n", 1)).wait(t), "the engine takes results")
	require.NoError(t, h.sources["t"].mustOffer(t, task("poison", "n", 1)).wait(t), "settled, not retried for ever")
	replaced := sink.byKey(t, "poison:n:1")
	require.NotNil(t, replaced.Error)
	assert.Equal(t, domain.StatusFailed, replaced.Status)
	assert.Equal(t, domain.CodeResultRejected, replaced.Error.Code)
	assert.Contains(t, replaced.Error.Message, "message larger than the engine takes")
	assert.Zero(t, h.rt.Stats().DeadLettered)
}

func TestResultRefusedEvenInItsMinimalFormIsDeadLettered(t *testing.T) {
	obs := &recordingObserver{finished: map[string]int{}, refused: map[string]int{}}
	cfg := testConfig()
	cfg.Observer = obs
	h := newHarness(t, cfg, on("t", completing("calc", 2)))
	h.sinks["t"].rejects = func(r domain.Result) bool { return r.RunID == "poison" }
	h.run(t)

	poison := h.sources["t"].mustOffer(t, task("poison", "n", 1))
	// Refused with nothing else delivered: not yet pinned on the poison.
	require.Eventually(t, func() bool { return h.rt.Stats().DeliveryRetries >= 1 }, 5*time.Second, time.Millisecond)
	assert.False(t, poison.settled())
	// The engine takes another result meanwhile: the refusal is the poison's.
	require.NoError(t, h.sources["t"].mustOffer(t, task("ok", "n", 1)).wait(t), "later results are delivered")
	err := poison.wait(t)
	require.ErrorIs(t, err, domain.ErrUndeliverable, "settled so that a Kafka source commits and moves on")
	require.False(t, errors.Is(err, domain.ErrHandedBack), "a dead-lettered task must not be redelivered")
	assert.Equal(t, 1, h.rt.Stats().DeadLettered)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	assert.Equal(t, 1, obs.deadLettered)
}

// A result too large for the engine is its own fault, even when nothing
// else is delivered.
func TestResultTooLargeForTheEngineIsReplacedAtOnce(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 2)))
	h.sinks["t"].rejectWith = domain.ErrResultTooLarge
	h.sinks["t"].rejects = func(r domain.Result) bool { return r.Error == nil }
	h.run(t)
	require.NoError(t, h.sources["t"].mustOffer(t, task("big", "n", 1)).wait(t))
	res := h.sinks["t"].byKey(t, "big:n:1")
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeOutputTooLarge, res.Error.Code)
}

// An engine that refuses every result as if for good (it forgot the
// executor, say) is in trouble of its own: no result is replaced or
// dead-lettered for it, and once it takes results again, every one is
// delivered whole.
func TestEngineRefusingEveryResultLosesNothing(t *testing.T) {
	var refusing atomic.Bool
	refusing.Store(true)
	// The engine comes back when a full result reaches it after a few
	// retries, and one sender delivers: a suspect refused in the very
	// instant the engine comes back, on another sender, could be probed
	// before that sender's acknowledgement is counted, and its minimal
	// form would stand in for it (a probe cannot tell an engine that came
	// back in that instant from one refusing the result's content; see
	// probeMinimal).
	cfg := testConfig()
	cfg.ResultSenders = 1
	var h *harness
	h = newHarness(t, cfg, on("t", completing("calc", 4)))
	h.sinks["t"].rejects = func(r domain.Result) bool {
		if r.Error == nil && h.rt.Stats().DeliveryRetries >= 3 {
			refusing.Store(false)
		}
		return refusing.Load()
	}
	h.run(t)
	var settled []*settlement
	for i := range 4 {
		settled = append(settled, h.sources["t"].mustOffer(t, task("run", fmt.Sprintf("n%d", i), 1)))
	}
	for i, st := range settled {
		require.NoError(t, st.wait(t), "n%d", i)
	}
	for _, res := range h.sinks["t"].all() {
		assert.Equal(t, domain.StatusCompleted, res.Status, "%+v", res.Error)
	}
	assert.Zero(t, h.rt.Stats().DeadLettered)
}

// Issue 10, failure 4: a transport whose results cannot be delivered pauses
// its own intake, never the other transports'.
func TestOneTransportsDeadSinkDoesNotStallAnother(t *testing.T) {
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize, cfg.OutboxSize = 2, 2, 4
	h := newHarness(t, cfg, on("down", completing("a", 4)), on("up", completing("b", 4)))
	h.sinks["down"].failAll = true
	h.run(t)

	offered := 0
	require.Eventually(t, func() bool {
		_, err := h.sources["down"].offer(t, task("down", fmt.Sprintf("n%d", offered), 1), false)
		if err == nil {
			offered++
			return false
		}
		require.ErrorIs(t, err, domain.ErrOverloaded)
		return true
	}, 5*time.Second, time.Millisecond, "the dead transport's intake never paused")
	assert.GreaterOrEqual(t, offered, cfg.OutboxSize)

	// Ten times the workers, the queue and the outbox: with workers held by
	// the dead sink this would stall.
	for i := range 40 {
		require.NoError(t, h.sources["up"].mustOffer(t, task("up", fmt.Sprintf("n%d", i), 1)).wait(t), "n%d", i)
	}
	_, err := h.sources["down"].in().AwaitCapacity(deadlineCtx(t, 20*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded, "the dead transport's intake stays paused")
}

func TestHandlerErrorMessageIsBounded(t *testing.T) {
	huge := strings.Repeat("x", 2<<20)
	quoting := funcExecutor{desc: domain.Descriptor{Type: "calc"}, run: func(context.Context, *domain.Task) (*domain.Result, error) {
		return nil, domain.NewError(domain.CodeInvalidInput, "bad input: "+huge)
	}}
	h := newHarness(t, testConfig(), on("t", quoting))
	h.run(t)
	require.NoError(t, h.sources["t"].mustOffer(t, task("r", "n", 1)).wait(t))
	res := h.sinks["t"].byKey(t, "r:n:1")
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeInvalidInput, res.Error.Code)
	assert.LessOrEqual(t, len(res.Error.Message), domain.MaxErrorMessageBytes+32)
}

// A failed periodic re-registration, while heartbeats succeed, leaves the
// type registered and the runtime ready.
func TestFailedPeriodicReregistrationKeepsReadiness(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval, cfg.ReregisterInterval = 2*time.Millisecond, time.Millisecond
	h := newHarness(t, cfg, on("t", completing("calc", 1)))
	h.run(t)
	require.Eventually(t, func() bool { return h.rt.Ready() == nil }, 5*time.Second, time.Millisecond)
	h.control.mu.Lock()
	h.control.failReg = 5
	h.control.mu.Unlock()
	require.Eventually(t, func() bool {
		h.control.mu.Lock()
		defer h.control.mu.Unlock()
		require.NoError(t, h.rt.Ready(), "a failed refresh made the runtime unready while heartbeats succeed")
		return h.control.failReg == 0
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, h.rt.Ready())
}

// When every slot of a type is held by a handler that ignored its deadline,
// the type's waiting tasks, and those offered while it stays so, are
// answered FAILED HANDLERS_STALLED (retryable) at once: waiting, they would
// fill the shared queue and stop every other type. Once a handler returns,
// the type runs tasks again.
func TestStalledTypeAnswersItsTasksInsteadOfFillingTheQueue(t *testing.T) {
	release := make(chan struct{})
	stuck := funcExecutor{desc: domain.Descriptor{Type: "stuck", MaxConcurrentTasks: 1},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			if task.NodeID == "hung" {
				<-release // ignores its context
			}
			return &domain.Result{}, nil
		}}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 2, 2
	h := newHarness(t, cfg, on("t", stuck), on("u", completing("ok", 2)))
	h.run(t)
	hung := task("r", "hung", 1)
	hung.Timeout = 20 * time.Millisecond
	hungSettled := h.sources["t"].mustOffer(t, hung)
	queued := h.sources["t"].mustOffer(t, task("r", "queued", 1)) // waits for the hung handler's slot
	require.NoError(t, hungSettled.wait(t))
	require.NoError(t, queued.wait(t), "the task queued behind the stalled type was not answered")
	res := h.sinks["t"].byKey(t, "r:queued:1")
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeHandlersStalled, res.Error.Code)
	assert.True(t, res.Error.Retryable)

	for i := range 10 { // more than the workers and the queue
		require.NoError(t, h.sources["t"].mustOffer(t, task("r", fmt.Sprintf("late-%d", i), 1)).wait(t))
		assert.Equal(t, domain.CodeHandlersStalled, h.sinks["t"].byKey(t, fmt.Sprintf("r:late-%d:1", i)).Error.Code)
		require.NoError(t, h.sources["u"].mustOffer(t, task("u", fmt.Sprintf("n%d", i), 1)).wait(t), "another type stopped")
	}

	close(release)
	require.Eventually(t, func() bool { return h.rt.Stats().Running["stuck"] == 0 }, 5*time.Second, time.Millisecond)
	require.NoError(t, h.sources["t"].mustOffer(t, task("r", "after", 1)).wait(t))
	assert.Equal(t, domain.StatusCompleted, h.sinks["t"].byKey(t, "r:after:1").Status)
}

// Cleanup hooks never run beside a handler that overran its deadline, as
// long as it returns within CallTimeout.
func TestCleanupWaitsForAnAbandonedHandler(t *testing.T) {
	release, cleanupCalled := make(chan struct{}), make(chan struct{})
	var cleanupBesideHandler atomic.Bool
	ex := &cleaningExecutor{funcExecutor: funcExecutor{desc: domain.Descriptor{Type: "stuck"},
		run: func(context.Context, *domain.Task) (*domain.Result, error) {
			<-release // ignores its context
			// Still running: a Cleanup called now runs beside the handler.
			// The wait is bounded so that the handler returns either way.
			select {
			case <-cleanupCalled:
				cleanupBesideHandler.Store(true)
			case <-time.After(100 * time.Millisecond):
			}
			return &domain.Result{}, nil
		}}, cleanup: func() { close(cleanupCalled) }}
	cfg := testConfig()
	cfg.CallTimeout = 10 * time.Second
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)
	stuck := task("r", "n", 1)
	stuck.Timeout = 5 * time.Millisecond
	require.NoError(t, h.sources["t"].mustOffer(t, stuck).wait(t), "answered TIMEOUT without waiting for the handler")

	stopped := make(chan error, 1)
	go func() { stopped <- h.stop(t) }()
	close(release)
	require.NoError(t, <-stopped)
	require.True(t, ex.cleaned.Load(), "Cleanup ran")
	assert.False(t, cleanupBesideHandler.Load(), "Cleanup ran while the abandoned handler still ran")
}

type cleaningExecutor struct {
	funcExecutor
	cleanup func()
	cleaned atomic.Bool
}

func (c *cleaningExecutor) Cleanup(context.Context) error {
	c.cleanup()
	c.cleaned.Store(true)
	return nil
}

func withKey(t domain.Task, key string) domain.Task {
	t.IdempotencyKey = key
	return t
}

func withExecutorID(t domain.Task, id string) domain.Task {
	t.ExecutorID = id
	return t
}

func deadlineCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
