package app_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// Tests of how a worker runs handlers on its own goroutine (worker.go): a
// handler it abandons, or one that ends its goroutine, costs the pool no
// worker.

// With one worker, a handler that ignores its deadline is abandoned and the
// next task still runs: a new worker took the place of the one whose
// goroutine the handler holds.
func TestAbandonedHandlerHandsItsWorkerPlaceOn(t *testing.T) {
	release := make(chan struct{})
	stuck := funcExecutor{
		desc: domain.Descriptor{Type: "stuck"},
		run: func(context.Context, *domain.Task) (*domain.Result, error) {
			<-release // ignores its context
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 1, 4
	h := newHarness(t, cfg, on("t", stuck), on("t", completing("quick", 1)))
	h.run(t)

	first := task("run", "first", 1)
	first.ExecutorType, first.Timeout = "stuck", 20*time.Millisecond
	require.NoError(t, h.sources["t"].mustOffer(t, first).wait(t))
	assert.Equal(t, domain.CodeTimeout, h.sinks["t"].byKey(t, "run:first:1").Error.Code)

	next := task("run", "next", 1)
	next.ExecutorType = "quick"
	require.NoError(t, h.sources["t"].mustOffer(t, next).wait(t), "no worker took the next task")
	assert.Equal(t, domain.StatusCompleted, h.sinks["t"].byKey(t, "run:next:1").Status)
	assert.Equal(t, 1, h.rt.Stats().Running["stuck"], "the abandoned handler stopped counting as running while it runs")

	close(release)
	require.Eventually(t, func() bool { return h.rt.Stats().Running["stuck"] == 0 }, 5*time.Second, time.Millisecond)
}

// A cancelled handler that ignores its context is abandoned abandonGrace
// after the cancellation, not at its deadline: its task is answered
// CANCELLED at once, and its slot stays held until it returns.
func TestCancelledHandlerThatIgnoresItsContextIsAnsweredAtOnce(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "deaf", MaxConcurrentTasks: 1},
		run: func(context.Context, *domain.Task) (*domain.Result, error) {
			close(started)
			<-release // ignores its context
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)
	deaf := task("run", "deaf", 1)
	deaf.Timeout = time.Hour
	st := h.sources["t"].mustOffer(t, deaf)
	<-started

	cancelled := time.Now()
	require.True(t, h.sources["t"].in().Cancel("task-run-deaf", "user aborted"))
	require.NoError(t, st.wait(t))
	assert.Less(t, time.Since(cancelled), time.Minute, "answered at its deadline, not at its cancellation")
	res := h.sinks["t"].byKey(t, "run:deaf:1")
	assert.Equal(t, domain.StatusCancelled, res.Status)
	assert.Equal(t, "user aborted", res.Error.Message)
	assert.Equal(t, 1, h.rt.Stats().Running["deaf"], "the handler's slot was freed while it runs")

	close(release)
	require.Eventually(t, func() bool { return h.rt.Stats().Running["deaf"] == 0 }, 5*time.Second, time.Millisecond)
	require.NoError(t, h.sources["t"].mustOffer(t, task("run", "after", 1)).wait(t), "the slot was not freed when the handler returned")
}

// A handler that ends its goroutine (runtime.Goexit, as testing's FailNow
// does) is answered FAILED at once, and the worker whose goroutine ended is
// replaced: with one worker, the next task still runs.
func TestHandlerThatEndsItsGoroutineIsAnsweredAndItsWorkerReplaced(t *testing.T) {
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "exits"},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			if task.NodeID == "exits" {
				runtime.Goexit()
			}
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	cfg := testConfig()
	cfg.Workers = 1
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)

	exits := task("run", "exits", 1)
	exits.Timeout = time.Hour
	require.NoError(t, h.sources["t"].mustOffer(t, exits).wait(t))
	res := h.sinks["t"].byKey(t, "run:exits:1")
	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeExecutionError, res.Error.Code)
	assert.Contains(t, res.Error.Message, "Goexit")
	assert.True(t, res.Error.Retryable)
	assert.Equal(t, "test-exits", res.ExecutorID)

	require.NoError(t, h.sources["t"].mustOffer(t, task("run", "next", 1)).wait(t), "no worker took the next task")
	assert.Equal(t, domain.StatusCompleted, h.sinks["t"].byKey(t, "run:next:1").Status)
	assert.Equal(t, 0, h.rt.Stats().Running["exits"])
}

// Workers are woken one at a time (scheduler.wakeOne), each waking the next
// while jobs may start: a burst of tasks still runs on every idle worker at
// once. Each handler here returns only once all of them run together.
func TestABurstRunsOnEveryIdleWorkerAtOnce(t *testing.T) {
	const n = 6
	arrived, together := make(chan struct{}, n), make(chan struct{})
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "together", MaxConcurrentTasks: n},
		run: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
			arrived <- struct{}{}
			select {
			case <-together:
				return &domain.Result{Status: domain.StatusCompleted}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
	cfg := testConfig()
	cfg.Workers = n
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)
	var settled []*settlement
	for i := range n {
		settled = append(settled, h.sources["t"].mustOffer(t, task("run", "n"+string(rune('a'+i)), 1)))
	}
	for i := range n {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of %d tasks run at once on %d idle workers", i, n, n)
		}
	}
	close(together)
	for _, st := range settled {
		require.NoError(t, st.wait(t))
	}
}

// A handler's context carries its task's deadline (rounded up by less than
// a millisecond: see deadlines) and ends at it with TIMEOUT as its cause;
// tasks with other timeouts, started together, get their own.
func TestHandlersGetTheirTasksDeadline(t *testing.T) {
	type seen struct {
		deadline time.Time
		cause    error
	}
	seenBy := make(chan seen, 2)
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "deadline", MaxConcurrentTasks: 2},
		run: func(ctx context.Context, task *domain.Task) (*domain.Result, error) {
			deadline, _ := ctx.Deadline()
			if task.NodeID == "short" {
				<-ctx.Done()
			}
			seenBy <- seen{deadline, context.Cause(ctx)}
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	cfg := testConfig()
	cfg.Workers = 1
	h := newHarness(t, cfg, on("t", ex))
	h.run(t)

	for _, tt := range []struct {
		node    string
		timeout time.Duration
	}{{"long", time.Hour}, {"short", 30 * time.Millisecond}} {
		tk := task("run", tt.node, 1)
		tk.Timeout = tt.timeout
		before := time.Now()
		st := h.sources["t"].mustOffer(t, tk)
		require.NoError(t, st.wait(t))
		after := time.Now()
		s := <-seenBy
		assert.False(t, s.deadline.Before(before.Add(tt.timeout)), "%s: deadline %s is before the task's", tt.node, s.deadline)
		assert.True(t, s.deadline.Before(after.Add(tt.timeout+time.Millisecond)), "%s: deadline %s is later than the task's", tt.node, s.deadline)
		if tt.node == "short" {
			var cause *domain.Error
			require.ErrorAs(t, s.cause, &cause)
			assert.Equal(t, domain.CodeTimeout, cause.Code)
			assert.Contains(t, cause.Message, "30ms")
		}
	}
}
