package app_test

// Edge cases of shutdown, deduplication and start-up, each first found by
// review as a failing test. They reuse the doubles of fakes_test.go.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// blockingAfterHook is an executor whose AfterExecute hook, for the task
// "stuck", ignores its context and blocks until release is closed.
type blockingAfterHook struct {
	funcExecutor
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAfterHook) AfterExecute(_ context.Context, task *domain.Task, _ *domain.Result) {
	if task.NodeID == "stuck" {
		close(b.entered)
		<-b.release
	}
}

// A worker that outlives the flush deadline (here: a hook that ignores its
// context, which stop() anticipates and logs) must not strand the jobs still
// queued behind it: Intake.Offer promises that Settle is called exactly once,
// so stop() settles every job the closed scheduler still holds.
func TestQueuedTaskIsSettledWhenAWorkerOutlivesTheFlushDeadline(t *testing.T) {
	ex := &blockingAfterHook{funcExecutor: completing("hooked", 10), entered: make(chan struct{}), release: make(chan struct{})}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 1, 4
	cfg.DrainTimeout, cfg.FlushTimeout = 20*time.Millisecond, 20*time.Millisecond
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)

	stuck := h.sources["t"].mustOffer(t, task("run", "stuck", 1))
	<-ex.entered
	// Not redeliverable (a push task): it must be answered, not handed back.
	queued := h.sources["t"].mustOffer(t, task("run", "queued", 1))

	require.NoError(t, h.stop(t))
	close(ex.release)
	require.Error(t, stuck.wait(t)) // given up: the outbox is closed
	require.Error(t, queued.wait(t), "an accepted task was neither answered nor handed back")
}

// The same guarantee without misbehaving user code: the engine is
// unreachable during shutdown, so workers are held by a full outbox until the
// flush deadline, and the scheduler closes while jobs answered SHUTDOWN still
// wait in it. The gate, held in the released worker's own Settle callback
// until Run has returned, makes that interleaving certain; every job must
// still be settled.
func TestQueuedTasksAreSettledWhenTheEngineIsDownAtShutdown(t *testing.T) {
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize, cfg.OutboxSize, cfg.ResultSenders, cfg.ResultBatchSize = 1, 4, 10, 1, 1
	cfg.DrainTimeout, cfg.FlushTimeout = 30*time.Millisecond, 30*time.Millisecond
	h := newHarness(t, cfg, on("t", completing("calc", 10)))
	h.sinks["t"].failAll = true
	h.run(t)
	src := h.sources["t"]

	// n0 is held by the failing sender; the others run, or wait in the
	// lane when the drain starts, and are answered SHUTDOWN then; no
	// result can be delivered.
	var settled []*settlement
	for i := range 5 {
		settled = append(settled, src.mustOffer(t, task("run", fmt.Sprintf("n%d", i), 1)))
	}
	require.NoError(t, h.stop(t))
	for i, st := range settled { // given up: settled with ErrHandedBack
		require.ErrorIs(t, st.wait(t), domain.ErrHandedBack, "n%d", i)
	}
	assert.Empty(t, h.sinks["t"].all())
	assert.Equal(t, 5, h.rt.Stats().Undelivered)
}

// doneSignallingContext reports, by closing entered, the first time a caller
// selects on Done: the caller is then past every check it makes first.
type doneSignallingContext struct {
	context.Context
	once    sync.Once
	entered chan struct{}
}

func (c *doneSignallingContext) Done() <-chan struct{} {
	c.once.Do(func() { close(c.entered) })
	return c.Context.Done()
}

// ports.Intake.AwaitCapacity "returns domain.ErrDraining once the runtime is
// shutting down": also to a pull source that was already waiting for room
// when the drain started, rather than leaving it blocked or telling it there
// is room that Offer will refuse.
func TestAwaitCapacityWaitingWhenTheDrainStartsReturnsErrDraining(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate) // before the harness's Cleanup, which waits for the drain
	var mu sync.Mutex
	var running, peak int64
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 1, 0
	h := newHarness(t, cfg, on("t", gated("slow", 1, gate, &running, &peak, &mu)))
	h.run(t)
	h.sources["t"].mustOffer(t, task("run", "busy", 1)) // the runtime is now full

	base, cancelAwait := context.WithCancel(context.Background())
	t.Cleanup(cancelAwait)
	ctx := &doneSignallingContext{Context: base, entered: make(chan struct{})}
	awaited := make(chan error, 1)
	go func() {
		_, err := h.sources["t"].in().AwaitCapacity(ctx)
		awaited <- err
	}()
	<-ctx.entered // AwaitCapacity is waiting for room

	h.cancel() // the harness's Cleanup waits for Run to return
	require.Eventually(t, func() bool { return h.events.index("stop:t") >= 0 }, 5*time.Second, time.Millisecond)
	select {
	case err := <-awaited:
		require.ErrorIs(t, err, domain.ErrDraining)
	case <-time.After(2 * time.Second):
		t.Fatal("AwaitCapacity still blocked 2s after the runtime began draining")
	}
}

// PROTOCOL 1.3: results carry run_id, node_id, attempt and execution_token
// "exactly as received". A duplicate of a finished task gets the stored
// result addressed to the duplicate: its own execution token and task id.
func TestDuplicateOfFinishedTaskEchoesItsOwnExecutionToken(t *testing.T) {
	h := newHarness(t, testConfig(), on("t", completing("calc", 1)))
	h.run(t)

	first := task("run", "n", 1)
	require.NoError(t, h.sources["t"].mustOffer(t, first).wait(t))
	again := first
	again.ExecutionToken, again.TaskID = "tok-redispatched", "task-redispatched"
	require.NoError(t, h.sources["t"].mustOffer(t, again).wait(t))

	results := h.sinks["t"].waitResults(t, 2)
	require.Equal(t, "tok-redispatched", results[1].ExecutionToken, "the duplicate's result is not addressed to the duplicate")
	require.Equal(t, "task-redispatched", results[1].TaskID)
}

// initBlocksUntilCancelled is an executor whose Initialize hook takes until
// the context ends (a slow database connect interrupted by SIGTERM).
type initBlocksUntilCancelled struct {
	funcExecutor
	entered chan struct{}
}

func (i *initBlocksUntilCancelled) Initialize(ctx context.Context) error {
	close(i.entered)
	<-ctx.Done()
	return ctx.Err()
}

// Run's doc: "a shutdown requested through ctx is not an error". That holds
// for a SIGTERM that arrives during a slow Initialize hook too: the process
// must not exit non-zero for it.
func TestShutdownDuringInitializeIsNotAnError(t *testing.T) {
	ex := &initBlocksUntilCancelled{funcExecutor: completing("slowinit", 1), entered: make(chan struct{})}
	h := newHarness(t, testConfig(), on("t", ex))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.rt.Run(ctx) }()
	<-ex.entered
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "a shutdown requested during start-up was reported as a failure")
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// initBlocksUntilReleased is an executor whose Initialize hook returns once
// released (a cache warmed, a model loaded).
type initBlocksUntilReleased struct {
	funcExecutor
	release chan struct{}
}

func (i *initBlocksUntilReleased) Initialize(ctx context.Context) error {
	select {
	case <-i.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Started answers the startup probe: it waits for the process's own
// start-up (the Initialize hooks) and never for the engine, so a pod whose
// engine is away is not restarted for it.
func TestStartedFollowsInitializeNotTheEngine(t *testing.T) {
	ex := &initBlocksUntilReleased{funcExecutor: completing("warmup", 1), release: make(chan struct{})}
	h := newHarness(t, testConfig(), on("t", ex))
	h.control.mu.Lock()
	h.control.failReg = 1 << 30 // the engine refuses every registration
	h.control.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.rt.Run(ctx) }()
	defer func() { cancel(); <-done }()

	require.ErrorContains(t, h.rt.Started(), "Initialize")
	close(ex.release)
	require.Eventually(t, func() bool { return h.rt.Started() == nil }, 5*time.Second, time.Millisecond,
		"the runtime did not report started once its Initialize hooks returned")
	require.Error(t, h.rt.Ready(), "not ready while the engine refuses registration")
}
