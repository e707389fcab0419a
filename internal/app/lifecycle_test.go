package app

// Unit tests of the task lifecycle (lifecycle.go): every transition the
// table allows, through the taskTable method that performs it, and illegal
// moves refused with the job left as it was.

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// The transition table is the diagram of docs/architecture.md and
// lifecycle.go, edge for edge: changing one without the others fails here.
func TestLifecycleTransitionTable(t *testing.T) {
	legal := map[[2]stage]bool{
		{offered, queued}:    true,
		{offered, answered}:  true,
		{queued, running}:    true,
		{queued, answered}:   true,
		{queued, settled}:    true,
		{answered, finished}: true,
		{answered, settled}:  true,
		{running, finished}:  true,
		{finished, settled}:  true,
	}
	all := []stage{offered, queued, answered, running, finished, settled}
	names := map[string]bool{}
	for _, from := range all {
		names[from.String()] = true
		for _, to := range all {
			assert.Equal(t, legal[[2]stage{from, to}], from.canMoveTo(to), "%s -> %s", from, to)
		}
	}
	assert.Len(t, names, len(all), "two stages share a name")
	assert.False(t, stage(200).canMoveTo(offered), "an unknown stage may move")
	assert.Equal(t, "stage(200)", stage(200).String())
}

// lifecycleFixture is a task table over a scheduler with one lane of one
// slot, run by exec.
type lifecycleFixture struct {
	table *taskTable
	sched *scheduler
	exec  *hostedExecutor
}

func newLifecycleFixture(limit int) *lifecycleFixture {
	sched := newScheduler(limit)
	exec := &hostedExecutor{lane: sched.newLane(1)}
	return &lifecycleFixture{table: newTaskTable(16, sched), sched: sched, exec: exec}
}

func lifecycleJob(node string) *job {
	task := &domain.Task{TaskID: "task-" + node, RunID: "run", NodeID: node, Attempt: 1, ExecutionToken: "tok-" + node}
	return newJob(task, nil, false)
}

// start starts j as a worker does, with a context of its own that the
// table's cancellations end: the context when j runs, else j's answer.
func (f *lifecycleFixture) start(j *job) (context.Context, *domain.Result, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	answer, err := f.table.start(j, cancel)
	if err != nil || answer != nil {
		cancel(nil)
		return nil, answer, err
	}
	return ctx, nil, nil
}

// settleRecorder is a delivery's Settle callback that records its calls.
type settleRecorder struct{ calls []error }

func (s *settleRecorder) settle(err error) { s.calls = append(s.calls, err) }

// offerToRun offers j to be run by the fixture's executor.
func (f *lifecycleFixture) offerToRun(t *testing.T, j *job, settle func(error)) {
	t.Helper()
	outcome, err := f.table.offer(j, settle, f.exec, nil)
	require.NoError(t, err)
	require.Equal(t, admitted, outcome)
}

// take returns the job a worker would take now, or nil: scheduler.next
// without blocking.
func (f *lifecycleFixture) take() *job {
	f.sched.mu.Lock()
	defer f.sched.mu.Unlock()
	return f.sched.pick()
}

// stageOf reads j's stage under its lock.
func (f *lifecycleFixture) stageOf(j *job) stage {
	return j.stage()
}

func requireIllegal(t *testing.T, err error, from, to stage) {
	t.Helper()
	var illegal *illegalTransition
	require.ErrorAs(t, err, &illegal)
	assert.Equal(t, from, illegal.from)
	assert.Equal(t, to, illegal.to)
}

func completed(task *domain.Task) *domain.Result {
	res := domain.ResultFor(task, domain.StatusCompleted)
	return &res
}

// offered -> queued -> running -> finished -> settled, and the result is
// then answered to a duplicate.
func TestLifecycleRunsAQueuedTaskToSettlement(t *testing.T) {
	f := newLifecycleFixture(4)
	j, rec := lifecycleJob("n"), &settleRecorder{}
	f.offerToRun(t, j, rec.settle)
	assert.Equal(t, queued, f.stageOf(j))
	assert.Same(t, f.exec.lane, j.lane, "a job to run waits in its type's lane")
	require.Same(t, j, f.take())

	ctx, answer, err := f.start(j)
	require.NoError(t, err)
	require.Nil(t, answer)
	require.NotNil(t, ctx)
	assert.Equal(t, running, f.stageOf(j))

	require.NoError(t, f.table.finish(j))
	assert.Equal(t, finished, f.stageOf(j))
	assert.False(t, f.table.cancel(j.id, errors.New("late")), "a finished task was cancelled")
	assert.NoError(t, ctx.Err(), "finish ended the worker's context, which its next task reuses")

	res := completed(j.task)
	settles, err := f.table.settle(j, res)
	require.NoError(t, err)
	require.Len(t, settles, 1)
	settles[0](nil)
	assert.Equal(t, []error{nil}, rec.calls)
	assert.Equal(t, settled, f.stageOf(j))
	assert.False(t, f.table.cancel(j.task.ID(), errors.New("late")), "a settled task is still tracked")

	dup := lifecycleJob("n")
	dup.task.ExecutionToken = "tok-again"
	outcome, err := f.table.offer(dup, nil, f.exec, nil)
	require.NoError(t, err)
	require.Equal(t, admitted, outcome)
	assert.Equal(t, answered, f.stageOf(dup))
	assert.True(t, dup.untracked)
	_, answer, err = f.start(dup)
	require.NoError(t, err)
	require.NotNil(t, answer)
	assert.Equal(t, domain.StatusCompleted, answer.Status)
	assert.Equal(t, "tok-again", answer.ExecutionToken, "the stored result is not addressed to the duplicate")
}

// offered -> answered -> finished -> settled: an answer decided at intake,
// sent without running, in the immediate lane.
func TestLifecycleSendsAnAnswerWithoutRunning(t *testing.T) {
	f := newLifecycleFixture(4)
	j := lifecycleJob("n")
	noExecutor := completed(j.task)
	noExecutor.Status = domain.StatusFailed
	outcome, err := f.table.offer(j, nil, nil, noExecutor)
	require.NoError(t, err)
	require.Equal(t, admitted, outcome)
	assert.Equal(t, answered, f.stageOf(j))
	assert.Nil(t, j.lane, "an answered job waits in a lane")

	ctx, answer, err := f.start(j)
	require.NoError(t, err)
	assert.Nil(t, ctx)
	assert.Same(t, noExecutor, answer)
	assert.Equal(t, finished, f.stageOf(j))
	_, err = f.table.settle(j, nil)
	require.NoError(t, err)
}

// An invalid task is admitted answered and never tracked: a valid task with
// its identity is neither joined to it nor answered its result.
func TestLifecycleUntrackedOfferIsNotDeduplicated(t *testing.T) {
	f := newLifecycleFixture(4)
	invalid := lifecycleJob("n")
	outcome, err := f.table.offerUntracked(invalid, nil, completed(invalid.task))
	require.NoError(t, err)
	require.Equal(t, admitted, outcome)
	assert.Equal(t, answered, f.stageOf(invalid))

	valid := lifecycleJob("n")
	f.offerToRun(t, valid, nil)
	assert.Equal(t, queued, f.stageOf(valid))
}

// A duplicate of a task in flight joins it: one job, settled once, every
// delivery's callback returned.
func TestLifecycleDuplicateJoinsTheTaskInFlight(t *testing.T) {
	f := newLifecycleFixture(4)
	j, first, second := lifecycleJob("n"), &settleRecorder{}, &settleRecorder{}
	f.offerToRun(t, j, first.settle)
	outcome, err := f.table.offer(lifecycleJob("n"), second.settle, f.exec, nil)
	require.NoError(t, err)
	assert.Equal(t, joined, outcome)
	assert.Equal(t, 4-1, f.sched.free(), "the duplicate took a slot")

	settles, err := f.table.settle(j, nil) // handed back
	require.NoError(t, err)
	for _, s := range settles {
		s(domain.ErrHandedBack)
	}
	assert.Equal(t, []error{domain.ErrHandedBack}, first.calls)
	assert.Equal(t, []error{domain.ErrHandedBack}, second.calls)
}

// A refused offer stays offered and untracked, and may be offered again.
func TestLifecycleRefusedOfferIsNotTracked(t *testing.T) {
	f := newLifecycleFixture(1)
	f.offerToRun(t, lifecycleJob("first"), nil)
	j := lifecycleJob("n")
	outcome, err := f.table.offer(j, nil, f.exec, nil)
	require.NoError(t, err)
	assert.Equal(t, refused, outcome)
	assert.Equal(t, offered, f.stageOf(j))
	assert.False(t, f.table.cancel(j.task.ID(), errors.New("x")), "a refused task is tracked")
}

// queued -> answered by cancel: moved to the immediate lane, and answered
// CANCELLED without running.
func TestLifecycleCancelAnswersAQueuedTask(t *testing.T) {
	f := newLifecycleFixture(4)
	j := lifecycleJob("n")
	f.offerToRun(t, j, nil)
	cause := &domain.Error{Code: domain.CodeCancelled, Message: "user aborted"}
	require.True(t, f.table.cancel(j.task.ID(), cause))
	assert.Equal(t, answered, f.stageOf(j))
	assert.Nil(t, j.lane, "the cancelled job was not expedited")
	assert.False(t, f.table.cancel(j.key, cause), "an answered task was cancelled twice")

	require.Same(t, j, f.take())
	_, answer, err := f.start(j)
	require.NoError(t, err)
	require.NotNil(t, answer)
	assert.Equal(t, domain.StatusCancelled, answer.Status)
}

// A job a worker took but has not started yet is answered by cancel, and
// start finds the answer.
func TestLifecycleCancelAfterAWorkerTookTheJob(t *testing.T) {
	f := newLifecycleFixture(4)
	j := lifecycleJob("n")
	f.offerToRun(t, j, nil)
	require.Same(t, j, f.take())
	require.True(t, f.table.cancel(j.task.ID(), &domain.Error{Code: domain.CodeCancelled}))
	_, answer, err := f.start(j)
	require.NoError(t, err)
	require.NotNil(t, answer, "the worker ran a cancelled task")
	assert.Equal(t, finished, f.stageOf(j))
}

// Cancelling a running task ends its handler's context with the cause; a
// finished task cannot be cancelled.
func TestLifecycleCancelEndsARunningHandler(t *testing.T) {
	f := newLifecycleFixture(4)
	j := lifecycleJob("n")
	f.offerToRun(t, j, nil)
	ctx, _, err := f.start(j)
	require.NoError(t, err)
	cause := &domain.Error{Code: domain.CodeCancelled, Message: "stop"}
	require.True(t, f.table.cancel(j.key, cause))
	assert.Same(t, cause, context.Cause(ctx))
	assert.Equal(t, running, f.stageOf(j), "cancel moved a running job: its handler decides its result")

	require.NoError(t, f.table.finish(j))
	assert.False(t, f.table.cancel(j.key, cause), "a finished task was cancelled")
	assert.False(t, f.table.cancel("unknown", cause))
}

// At the drain deadline, running handlers are cancelled, queued jobs are
// answered, and so is a queued job a worker takes later.
func TestLifecycleShutDown(t *testing.T) {
	f := newLifecycleFixture(4)
	run, waiting, taken := lifecycleJob("run"), lifecycleJob("waiting"), lifecycleJob("taken")
	f.offerToRun(t, run, nil)
	ctx, _, err := f.start(run)
	require.NoError(t, err)
	f.offerToRun(t, waiting, nil)
	// taken runs on a second type, whose lane has room: a worker takes it
	// before the deadline and starts it after.
	other := &hostedExecutor{lane: f.sched.newLane(1)}
	outcome, err := f.table.offer(taken, nil, other, nil)
	require.NoError(t, err)
	require.Equal(t, admitted, outcome)
	require.Same(t, run, f.take(), "the first lane's only job")
	require.Same(t, taken, f.take(), "waiting is behind run's slot; taken is next")

	cause := &domain.Error{Code: domain.CodeShutdown, Retryable: true}
	n, err := f.table.shutDown(cause)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Same(t, cause, context.Cause(ctx))
	assert.Equal(t, answered, f.stageOf(waiting))
	assert.Nil(t, waiting.lane, "the answered job waits behind a running one")

	_, answer, err := f.start(taken)
	require.NoError(t, err)
	require.NotNil(t, answer, "a task started after the drain deadline")
	assert.Equal(t, domain.CodeShutdown, answer.Error.Code)
}

// A lane whose every slot is held by an overrunning handler has its queued
// jobs answered; a lane that is not stalled is left alone.
func TestLifecycleAnswerStalled(t *testing.T) {
	f := newLifecycleFixture(4)
	stuck, waiting := lifecycleJob("stuck"), lifecycleJob("waiting")
	f.offerToRun(t, stuck, nil)
	f.offerToRun(t, waiting, nil)
	stalledAnswer := func(j *job) *domain.Result { return completed(j.task) }

	stalled, n, err := f.table.answerStalled(f.exec.lane, stalledAnswer)
	require.NoError(t, err)
	assert.False(t, stalled)
	assert.Zero(t, n)
	assert.Equal(t, queued, f.stageOf(waiting))

	require.Same(t, stuck, f.take())
	f.sched.release(stuck, true, sample{}) // its handler overran: the lane's one slot stays held
	stalled, n, err = f.table.answerStalled(f.exec.lane, stalledAnswer)
	require.NoError(t, err)
	assert.True(t, stalled)
	assert.Equal(t, 1, n)
	assert.Equal(t, answered, f.stageOf(waiting))
	require.Same(t, waiting, f.take(), "the answered job did not move to the immediate lane")
}

// queued -> settled: a job handed back at stop, or given up when the
// scheduler closes, is settled without a result.
func TestLifecycleHandBackAQueuedJob(t *testing.T) {
	f := newLifecycleFixture(4)
	j := lifecycleJob("n")
	f.offerToRun(t, j, nil)
	settles, err := f.table.settle(j, nil)
	require.NoError(t, err)
	assert.Len(t, settles, 1)
	assert.Equal(t, settled, f.stageOf(j))

	again := lifecycleJob("n")
	f.offerToRun(t, again, nil) // routed, not answered from a remembered result
	assert.Equal(t, queued, f.stageOf(again))
}

// Illegal moves are refused with an *illegalTransition and leave the job
// as it was.
func TestLifecycleRefusesIllegalTransitions(t *testing.T) {
	f := newLifecycleFixture(8)

	t.Run("finish a queued job", func(t *testing.T) {
		j := lifecycleJob("finish-queued")
		f.offerToRun(t, j, nil)
		requireIllegal(t, f.table.finish(j), queued, finished)
		assert.Equal(t, queued, f.stageOf(j))
	})
	t.Run("start a running job", func(t *testing.T) {
		j := lifecycleJob("start-running")
		f.offerToRun(t, j, nil)
		_, _, err := f.start(j)
		require.NoError(t, err)
		ctx, answer, err := f.start(j)
		requireIllegal(t, err, running, running)
		assert.Nil(t, ctx)
		assert.Nil(t, answer)
		assert.Equal(t, running, f.stageOf(j))
	})
	t.Run("settle a running job", func(t *testing.T) {
		j := lifecycleJob("settle-running")
		f.offerToRun(t, j, nil)
		_, _, err := f.start(j)
		require.NoError(t, err)
		settles, err := f.table.settle(j, nil)
		requireIllegal(t, err, running, settled)
		assert.Nil(t, settles)
		assert.True(t, f.table.cancel(j.key, errors.New("x")), "the refused settle untracked the job")
	})
	t.Run("settle twice", func(t *testing.T) {
		j, rec := lifecycleJob("settle-twice"), &settleRecorder{}
		f.offerToRun(t, j, rec.settle)
		settles, err := f.table.settle(j, nil)
		require.NoError(t, err)
		require.Len(t, settles, 1)
		settles, err = f.table.settle(j, nil)
		requireIllegal(t, err, settled, settled)
		assert.Empty(t, settles, "a delivery would be settled twice")
	})
	t.Run("start a settled job", func(t *testing.T) {
		j := lifecycleJob("start-settled")
		f.offerToRun(t, j, nil)
		_, err := f.table.settle(j, nil)
		require.NoError(t, err)
		_, _, err = f.start(j)
		requireIllegal(t, err, settled, running)
	})
	t.Run("offer an admitted job again", func(t *testing.T) {
		j := lifecycleJob("offer-twice")
		f.offerToRun(t, j, nil)
		_, err := f.table.settle(j, nil) // no longer in flight, so not a duplicate
		require.NoError(t, err)
		free := f.sched.free()
		outcome, err := f.table.offerUntracked(j, nil, completed(j.task))
		requireIllegal(t, err, settled, answered)
		assert.Equal(t, refused, outcome)
		assert.Equal(t, free, f.sched.free(), "the refused job took a slot")
		assert.False(t, j.untracked, "the refused offer changed the job")
	})
	t.Run("answer a running job", func(t *testing.T) {
		j := lifecycleJob("answer-running")
		f.offerToRun(t, j, nil)
		_, _, err := f.start(j)
		require.NoError(t, err)
		j.life.mu.Lock()
		err = f.table.answerQueued(j, completed(j.task))
		j.life.mu.Unlock()
		requireIllegal(t, err, running, answered)
		// A job from a snapshot of the queues that a worker started since
		// (shutDown, answerStalled) is left to the worker, without error.
		ok, err := f.table.answerQueuedJob(j, completed(j.task))
		require.NoError(t, err)
		assert.False(t, ok, "a job started since the snapshot was answered")
		assert.Equal(t, running, f.stageOf(j))
	})
}
