package app

import (
	"context"
	"errors"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// worker is one of the runtime's worker goroutines, with what it keeps from
// task to task. A worker runs each handler on its own goroutine, so that a
// task costs no hand-off to a goroutine of its own.
//
// A handler that ignores the end of its context cannot be stopped. When it
// has not returned abandonGrace after its context ended, the worker's
// watchdog answers its task in the worker's place and starts a new worker,
// which takes over this one's place in the pool (and its count in
// r.workers). The goroutine finishes the abandoned handler, which keeps its
// lane's slot until it returns, and then ends.
type worker struct {
	r        *Runtime
	watchdog *watchdog
	// job is the job whose handler runs, for abandon.
	job *job
	// deadlines gives the handlers' contexts their deadline, and
	// cancelTask ends the running handler's context with a cause (the
	// engine's cancel, shutdown: see cancelRunning).
	deadlines  deadlines
	cancelTask context.CancelCauseFunc
	// cancel is cancelRunning, bound once: a method value allocates.
	cancel context.CancelCauseFunc
	// abandonedAt is when the watchdog abandoned the handler, for the log.
	abandonedAt time.Time
	// sampled is the sample of the last handler run, for its lane's
	// adaptive limit (see sampleOf), passed on when its job is released.
	sampled sample
}

func (r *Runtime) newWorker() *worker {
	w := &worker{r: r}
	w.watchdog = newWatchdog(w.abandon)
	w.cancel = w.cancelRunning
	w.deadlines.causeOf = r.timeoutCauseOf
	return w
}

// runWorker runs a new worker until the scheduler closes. The worker holds
// one count of r.workers, which it gives up when it ends, or hands to the
// worker that replaces it when its handler is abandoned.
func (r *Runtime) runWorker() {
	w := r.newWorker()
	var done *job // released by the next call to next
	for {
		j := r.sched.next(done, w.sampled)
		if done != nil && done.lane != nil {
			done.lane.adaptive.logChange()
		}
		if j == nil {
			w.deadlines.release()
			r.workers.Done()
			return
		}
		if !w.run(j) {
			return // another worker holds its place and count now
		}
		done = j
	}
}

// run runs j, which the scheduler gave the worker, and reports whether the
// worker goes on: false once another worker has taken its place, and
// released j. When it goes on, j's slot is the worker's to release.
//
// A worker never blocks on result delivery: the outbox takes every result,
// and a transport whose results back up pauses its own intake instead (see
// outbox).
func (w *worker) run(j *job) (goesOn bool) {
	r := w.r
	w.sampled = sample{} // a job answered without its handler tells nothing
	var ctx context.Context
	started := time.Now()
	if j.spans != nil {
		j.spans.queue.End()
	}
	if j.exec != nil {
		// Made before start, which lets cancellations reach it: cancelTask
		// must be the running handler's from then on.
		ctx, w.cancelTask = w.handlerContext(j, started)
		defer w.cancelTask(nil)
	}
	answer, err := r.tasks.start(j, w.cancel)
	switch {
	case err != nil:
		r.lifecycleBug(err)
		return true
	case answer != nil:
		r.logResult(j, *answer)
		r.send(j, *answer)
		return true
	}

	e := j.exec
	ctx = w.scoped(j, ctx)
	e.running.Add(1)
	w.job = j
	returned := false
	defer func() {
		if !returned {
			w.handlerExited(j, started)
		}
	}()
	res, abandoned := runWatched(ctx, e.executor, j.task, j.id, started, w.watchdog)
	returned = true
	e.running.Add(-1)
	if abandoned {
		w.abandonedReturned(j)
		return false
	}
	w.sampled = sampleOf(j, res, false)
	r.finishRan(j, res)
	return true
}

// sampleOf returns what j's handler, which ended with res, tells its
// lane's adaptive limit: nothing for a lane whose limit is fixed or for a
// cancelled task (the engine's cancel says nothing of the downstream). A
// handler abandoned at its deadline is a very slow sample, its duration
// what it has run so far, counted as a retryable failure too: the
// downstream did not answer in time.
func sampleOf(j *job, res domain.Result, abandoned bool) sample {
	if j.lane == nil || j.lane.adaptive == nil || res.Status == domain.StatusCancelled && !abandoned {
		return sample{}
	}
	failed := abandoned || res.Status == domain.StatusFailed && res.Error != nil && res.Error.Retryable
	return sample{duration: res.Duration, at: monotonicNow(), failed: failed, ok: true}
}

// handlerContext returns the context j's handler runs under, started at
// started: the task's timeout (else the default) as its deadline (see
// deadlines), and cancellable with a cause.
func (w *worker) handlerContext(j *job, started time.Time) (context.Context, context.CancelCauseFunc) {
	timeout := j.task.Timeout
	if timeout <= 0 {
		timeout = w.r.cfg.DefaultTaskTimeout
	}
	return context.WithCancelCause(w.deadlines.parent(context.Background(), timeout, started))
}

// scoped returns the context j's handler runs under: ctx, the cancellable
// one handlerContext made, with the task's scope (see handlerScope) and,
// when tracing is on, the execute span; when it is off, the engine's span
// context if the task brought a traceparent, so that the handler's logs name
// its trace.
func (w *worker) scoped(j *job, ctx context.Context) context.Context {
	j.scope = handlerScope{Context: ctx, job: j}
	if j.spans != nil {
		return j.spans.startExecute(&j.scope)
	}
	return remoteContext(&j.scope, j.task.Trace)
}

// timeoutCauseOf is the cause of a handler's context that reached the
// deadline of timeout: made once for the default timeout.
func (r *Runtime) timeoutCauseOf(timeout time.Duration) error {
	if timeout == r.cfg.DefaultTaskTimeout {
		return r.timeoutCause
	}
	return timeoutCause(timeout)
}

// cancelRunning ends the context of the running handler with cause. The
// task table calls it, through job.life.cancel, only while the worker's
// job runs.
func (w *worker) cancelRunning(cause error) {
	w.cancelTask(cause)
	w.watchdog.ended()
}

// abandon is the watchdog's onAbandon: it runs on the watchdog's goroutine
// while the handler of w.job still runs on the worker's. It sends the
// decided result and starts a new worker in this one's place. The slot of
// the handler's lane stays taken (and the handler counts as running) until
// it returns: abandoned handlers of a type are bounded by its
// MaxConcurrentTasks, never piling up.
func (w *worker) abandon(res domain.Result) {
	r, j := w.r, w.job
	r.cfg.Observer.HandlerAbandoned(j.exec.desc.Type)
	r.taskLogger(j).Warn("handler ignored the end of its context and still runs; its slot stays taken until it returns")
	w.abandonedAt = time.Now()
	r.overran.add()
	if j.spans != nil {
		j.spans.execute.SetAttributes(attrAbandoned.Bool(true))
	}
	// Released before the result is sent, so that whoever sees the task
	// settled sees its admission freed too; the lane's slot stays held.
	r.sched.release(j, true, sampleOf(j, res, true))
	r.finishRan(j, res)
	r.answerStalled(j.exec)
	go r.runWorker()
}

// abandonedReturned frees what the abandoned handler of j held, now that
// it has returned (after abandon, which disarm waits for).
func (w *worker) abandonedReturned(j *job) {
	r := w.r
	w.deadlines.release() // this goroutine ends
	r.sched.releaseLane(j.lane)
	r.taskLogger(j).Info("abandoned handler returned", durationMS(time.Since(w.abandonedAt)))
	r.overran.done()
}

// handlerExited runs, deferred, when j's handler ended the worker's
// goroutine without returning (runtime.Goexit). The task is answered FAILED
// unless the watchdog abandoned the handler first, and a new worker takes
// this one's place, as the goroutine is ending.
func (w *worker) handlerExited(j *job, started time.Time) {
	j.exec.running.Add(-1)
	if _, abandoned := w.watchdog.disarm(); abandoned {
		w.abandonedReturned(j) // its replacement runs already
		return
	}
	w.deadlines.release()
	w.r.finishRan(j, exitedResult(j.task, started))
	w.r.sched.release(j, false, sample{})
	go w.r.runWorker()
}

// finishRan sends the result of j's handler, returned or decided when it
// was abandoned. The caller releases j's slot.
func (r *Runtime) finishRan(j *job, res domain.Result) {
	e := j.exec
	res.ExecutorID = e.reg.ExecutorID
	if j.spans != nil {
		j.spans.executed(&res)
	}
	r.cfg.Observer.TaskFinished(e.desc.Type, res.Status, res.Duration)
	if res.Status == domain.StatusCompleted || res.Status == domain.StatusSkipped {
		e.completed.Add(1)
	} else {
		e.failed.Add(1)
	}
	if err := r.tasks.finish(j); err != nil {
		r.lifecycleBug(err)
		return
	}
	r.logResult(j, res)
	r.send(j, res)
}

// send queues j's result in its transport's outbox, or settles j at once
// once the outbox takes no more.
func (r *Runtime) send(j *job, res domain.Result) {
	if j.spans != nil {
		res = j.spans.sending(res, j.task, r.cfg.Propagator)
	}
	if it := (outboxItem{result: res, job: j}); !j.transport.outbox.put(it) {
		r.settleAll([]outboxItem{it}, errors.New("executor stopped before the result could be sent"))
	}
}
