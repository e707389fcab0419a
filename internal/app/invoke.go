package app

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// Invoke runs one task through ex with the runtime's per-task semantics, and
// always returns a result addressed to the task:
//
//   - the handler's context carries the task's timeout (else defaultTimeout)
//     and ctx's cancellation; expiry yields FAILED TIMEOUT, cancellation with
//     a *domain.Error cause yields that code (CANCELLED -> status CANCELLED);
//   - a handler that ignores its context is abandoned when it has not
//     returned abandonGrace after the context ended: its result is decided
//     then, and whatever it returns later is dropped. A handler that
//     returns within the grace (one that watches ctx) gives its own answer;
//   - a panic yields FAILED PANIC with the stack;
//   - a returned error yields FAILED with the code of the *domain.Error in its
//     chain, else EXECUTION_ERROR (retryable);
//   - the error message and stack trace are bounded (domain.Result.Bounded);
//   - hooks run in order: BeforeExecute, Execute, OnError, AfterExecute.
//     AfterExecute never runs beside the handler: for an abandoned handler
//     it runs, with the decided result, once the handler has returned;
//   - a handler that ends its goroutine (runtime.Goexit) yields FAILED
//     EXECUTION_ERROR (retryable).
//
// The runtime's workers and the executortest harness both run tasks this
// way (runWatched), so a handler behaves the same in unit tests and in
// production. Invoke runs the handler on a goroutine of its own; a worker
// runs it on its own goroutine, and hands its place to a new worker when
// the handler is abandoned (see worker).
func Invoke(ctx context.Context, ex domain.Executor, task *domain.Task, defaultTimeout time.Duration) domain.Result {
	started := time.Now()
	hctx, stop := handlerContext(ctx, task.Timeout, defaultTimeout, started)
	// The handler runs on a goroutine of its own, so that Invoke can return
	// the watchdog's answer while a handler that ignores its context runs
	// on. answer holds the first answer: the handler's or the watchdog's.
	answer := make(chan domain.Result, 1)
	wd := newWatchdog(func(res domain.Result) { answer <- res })
	stopWatching := context.AfterFunc(hctx, wd.ended)
	go func() {
		defer stop()
		defer stopWatching()
		returned := false
		defer func() {
			if !returned { // the handler ended the goroutine (runtime.Goexit)
				if _, abandoned := wd.disarm(); !abandoned {
					answer <- exitedResult(task, started)
				}
			}
		}()
		res, abandoned := runWatched(invokeScope(ctx, hctx, ex, task), ex, task, task.ID(), started, wd)
		returned = true
		if !abandoned {
			answer <- res
		}
	}()
	return <-answer
}

// invokeScope returns hctx with the task's scope, as a worker gives its
// handlers (see handlerScope), logging to slog.Default(). Unless the
// caller's ctx carries a span already, it carries the engine's span context
// when the task brought a traceparent.
func invokeScope(ctx, hctx context.Context, ex domain.Executor, task *domain.Task) context.Context {
	// A job of its own, as a worker's handler has, for the handler's scope.
	j := &job{task: task, id: task.ID(), exec: &hostedExecutor{desc: ex.Descriptor()}} // no logger: slog.Default()
	scope := &handlerScope{Context: hctx, job: j}
	if trace.SpanContextFromContext(ctx).IsValid() {
		return scope
	}
	return remoteContext(scope, task.Trace)
}

// exitedResult answers a task whose handler ended its goroutine without
// returning (runtime.Goexit, as testing's FailNow does).
func exitedResult(task *domain.Task, started time.Time) domain.Result {
	return withTiming(failedResult(task, &domain.ErrorInfo{
		Code:      domain.CodeExecutionError,
		Message:   "the handler ended its goroutine (runtime.Goexit) without returning",
		Retryable: true,
	}), started)
}

// handlerContext returns the context a handler runs under: parent's, with
// the task's timeout (else defaultTimeout; none if that is not positive) as
// its deadline, counted from started, and a retryable TIMEOUT error naming
// the timeout as its cause at the deadline. (A worker gives its handlers
// the same: see deadlines.)
func handlerContext(parent context.Context, taskTimeout, defaultTimeout time.Duration, started time.Time) (context.Context, context.CancelFunc) {
	timeout := taskTimeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if timeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithDeadlineCause(parent, started.Add(timeout), timeoutCause(timeout))
}

// timeoutCause is the cause of a handler's context that reached its
// deadline: a retryable TIMEOUT error naming the timeout. It is read, never
// changed, so tasks with the same timeout may share one.
func timeoutCause(timeout time.Duration) *domain.Error {
	return &domain.Error{
		Code:      domain.CodeTimeout,
		Message:   fmt.Sprintf("task exceeded its %s timeout", timeout),
		Retryable: true,
	}
}

// runWatched runs the hooks and the handler of task on the calling
// goroutine under ctx, with wd watching it (see watchdog), and returns the
// result. When wd abandoned the handler, the result is the one wd decided
// and handed to its onAbandon then; runWatched returns it once the handler
// has returned and AfterExecute has run. id is task.ID(), which the caller
// may already know; started is when the task started.
func runWatched(ctx context.Context, ex domain.Executor, task *domain.Task, id string, started time.Time, wd *watchdog) (res domain.Result, abandoned bool) {
	wd.arm(ctx, task, id, started)
	o := runHandler(ctx, ex, task)
	if res, abandoned = wd.disarm(); !abandoned {
		res = withTiming(o.toResult(ctx, task, id), started)
	}
	if after, ok := ex.(domain.AfterExecuteHook); ok {
		// For an abandoned handler, AfterExecute sees the result already
		// sent, and what it changes of it stays here. The hook gets a copy
		// whose address escapes, so that executors without it need no heap
		// copy of the result.
		hooked := res
		callAfterHook(ctx, after, task, &hooked)
		res = hooked
	}
	return res, abandoned
}

// withTiming stamps a result decided now with the handler's timing and
// bounds its error (domain.Result.Bounded).
func withTiming(res domain.Result, started time.Time) domain.Result {
	now := time.Now()
	res.Duration = now.Sub(started)
	res.CompletedAt = now.UTC()
	return res.Bounded()
}

// abandonGrace is how long a handler has to return once its context has
// ended before it is taken to ignore its context and abandoned. It is far
// longer than a handler watching ctx needs to return, and short enough that
// the task's answer is still given at about its deadline.
const abandonGrace = 100 * time.Millisecond

// watchdog abandons a handler that ignores its context: when the handler
// has not returned abandonGrace after its context ended, the watchdog
// decides its result (TIMEOUT, or the cancellation's cause) and hands it to
// onAbandon, on a goroutine of its own, while the handler runs on. A
// handler that returns within the grace (one that watches its context, but
// whose goroutine had not run yet) gives its own answer.
//
// The goroutine running the handlers arms the watchdog for one handler at a
// time (a worker keeps one for all its tasks). The handler is due at its
// deadline plus the grace; ended brings that forward when the context ends
// sooner (a cancellation).
//
// The timer is not set and stopped for every handler, which would cost
// more than a quick handler: it stays set while handlers come and go, for
// no later than the armed handler is due. When it fires and the armed
// handler is not due yet (it fired for an earlier one), it is set again
// for when that one is due.
type watchdog struct {
	onAbandon func(domain.Result)

	mu    sync.Mutex
	timer *time.Timer // runs expire
	// timerAt is when the timer fires; zero once it has fired.
	timerAt time.Time
	// armed: a handler runs and has not returned (disarm).
	armed bool
	// due is when the armed handler is abandoned if it still runs; zero
	// while its context has neither a deadline nor has ended.
	due time.Time
	// abandoned: expire decided the armed handler's result (decided), and
	// abandonedDone is closed once onAbandon has returned.
	abandoned     bool
	decided       domain.Result
	abandonedDone chan struct{}
	// What expire needs to decide the result.
	ctx     context.Context
	task    *domain.Task
	id      string
	started time.Time
}

func newWatchdog(onAbandon func(domain.Result)) *watchdog {
	wd := &watchdog{onAbandon: onAbandon}
	wd.timer = time.AfterFunc(time.Hour, wd.expire)
	wd.timer.Stop() // set by setDue
	return wd
}

// arm watches the handler about to run task under ctx.
func (wd *watchdog) arm(ctx context.Context, task *domain.Task, id string, started time.Time) {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	wd.armed, wd.abandoned, wd.due = true, false, time.Time{}
	wd.ctx, wd.task, wd.id, wd.started = ctx, task, id, started
	switch deadline, ok := ctx.Deadline(); {
	case ctx.Err() != nil: // ended before the handler started
		wd.setDue(time.Now().Add(abandonGrace))
	case ok:
		wd.setDue(deadline.Add(abandonGrace))
	}
}

// ended tells the watchdog that the armed handler's context has ended: the
// handler has abandonGrace left to return.
func (wd *watchdog) ended() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if !wd.armed || wd.abandoned {
		return
	}
	if due := time.Now().Add(abandonGrace); wd.due.IsZero() || due.Before(wd.due) {
		wd.setDue(due)
	}
}

// setDue makes the armed handler due at due, and sets the timer for then
// unless it fires sooner already. Callers hold mu.
func (wd *watchdog) setDue(due time.Time) {
	wd.due = due
	if wd.timerAt.IsZero() || due.Before(wd.timerAt) {
		// The timer fires no earlier than due: time.Until is measured
		// before Reset counts from its own now.
		wd.timerAt = due
		wd.timer.Reset(time.Until(due))
	}
}

// disarm tells the watchdog that the armed handler has returned. It reports
// whether the watchdog abandoned the handler first, with the result it
// decided then, once onAbandon has returned.
func (wd *watchdog) disarm() (decided domain.Result, abandoned bool) {
	wd.mu.Lock()
	wd.armed = false // the timer stays set: see watchdog
	decided, abandoned, done := wd.decided, wd.abandoned, wd.abandonedDone
	wd.decided, wd.abandonedDone = domain.Result{}, nil
	wd.ctx, wd.task = nil, nil // let them go
	wd.mu.Unlock()
	if abandoned {
		<-done // what onAbandon settles happens before what the caller does next
	}
	return decided, abandoned
}

// expire abandons the armed handler if it is due. The timer may have been
// set for an earlier handler: a handler not due yet is left alone, and the
// timer set again for when it is.
func (wd *watchdog) expire() {
	wd.mu.Lock()
	wd.timerAt = time.Time{}
	if !wd.armed || wd.abandoned || wd.due.IsZero() {
		wd.mu.Unlock()
		return
	}
	if time.Now().Before(wd.due) {
		wd.setDue(wd.due)
		wd.mu.Unlock()
		return
	}
	wd.abandoned = true
	wd.decided = withTiming(causeResult(wd.ctx, wd.task), wd.started)
	wd.abandonedDone = make(chan struct{})
	decided, done := wd.decided, wd.abandonedDone
	wd.mu.Unlock()
	defer close(done)
	wd.onAbandon(decided)
}

type handlerOutcome struct {
	res *domain.Result
	err error
}

// runHandler calls the hooks and the handler, turning a panic into an error.
func runHandler(ctx context.Context, ex domain.Executor, task *domain.Task) handlerOutcome {
	res, err := callHandler(ctx, ex, task)
	if err != nil {
		if h, ok := ex.(domain.ErrorHook); ok {
			if replacement := callErrorHook(ctx, h, task, err); replacement != nil {
				return handlerOutcome{res: replacement}
			}
		}
	}
	return handlerOutcome{res: res, err: err}
}

func callHandler(ctx context.Context, ex domain.Executor, task *domain.Task) (res *domain.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, &panicError{value: p, stack: string(debug.Stack())}
		}
	}()
	if h, ok := ex.(domain.BeforeExecuteHook); ok {
		if err := h.BeforeExecute(ctx, task); err != nil {
			return nil, fmt.Errorf("before execute: %w", err)
		}
	}
	return ex.Execute(ctx, task)
}

func callErrorHook(ctx context.Context, h domain.ErrorHook, task *domain.Task, err error) (res *domain.Result) {
	defer func() {
		if recover() != nil {
			res = nil // a broken hook must not hide the original failure
		}
	}()
	return h.OnError(ctx, task, err)
}

func callAfterHook(ctx context.Context, h domain.AfterExecuteHook, task *domain.Task, res *domain.Result) {
	defer func() { _ = recover() }() // the result is final; a broken hook cannot change it
	h.AfterExecute(ctx, task, res)
}

// panicError carries a recovered panic and the stack where it happened.
type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprintf("handler panicked: %v", p.value) }

// toResult turns what the handler returned into a well-formed result; id is
// task.ID().
func (o handlerOutcome) toResult(ctx context.Context, task *domain.Task, id string) domain.Result {
	if o.err != nil {
		if ctx.Err() != nil && (errors.Is(o.err, context.Canceled) || errors.Is(o.err, context.DeadlineExceeded)) {
			return causeResult(ctx, task)
		}
		return failedResult(task, errorInfo(o.err))
	}
	if o.res == nil {
		return failedResult(task, &domain.ErrorInfo{
			Code:    domain.CodeExecutionError,
			Message: "handler returned neither a result nor an error",
		})
	}
	res := *o.res
	switch {
	case res.Status == "" && res.Error == nil:
		res.Status = domain.StatusCompleted
	case res.Status == "":
		res.Status = domain.StatusFailed
	case !res.Status.Valid():
		return failedResult(task, &domain.ErrorInfo{
			Code:    domain.CodeExecutionError,
			Message: fmt.Sprintf("handler returned unknown status %q", res.Status),
		})
	}
	if (res.Status == domain.StatusFailed || res.Status == domain.StatusCancelled) && res.Error == nil {
		res.Error = &domain.ErrorInfo{Code: domain.CodeExecutionError, Message: "handler reported " + string(res.Status) + " without an error"}
	}
	stamp(&res, task, id)
	return res
}

// causeResult answers a task whose context ended before its handler did.
func causeResult(ctx context.Context, task *domain.Task) domain.Result {
	cause := context.Cause(ctx)
	info := errorInfo(cause)
	switch {
	case errors.Is(cause, context.DeadlineExceeded):
		info = &domain.ErrorInfo{Code: domain.CodeTimeout, Message: "task deadline exceeded", Retryable: true}
	case errors.Is(cause, context.Canceled):
		info = &domain.ErrorInfo{Code: domain.CodeCancelled, Message: "task cancelled"}
	}
	return failedResult(task, info)
}

// failedResult builds a FAILED result, or CANCELLED when the code says so.
func failedResult(task *domain.Task, info *domain.ErrorInfo) domain.Result {
	status := domain.StatusFailed
	if info.Code == domain.CodeCancelled {
		status = domain.StatusCancelled
	}
	res := domain.ResultFor(task, status)
	res.Error = info
	return res
}

// errorInfo maps an error to what the engine reads: the code, message,
// details and retryability of a *domain.Error in the chain, the stack of a
// panic, or EXECUTION_ERROR (retryable) for anything else.
func errorInfo(err error) *domain.ErrorInfo {
	var p *panicError
	if errors.As(err, &p) {
		return &domain.ErrorInfo{Code: domain.CodePanic, Message: p.Error(), StackTrace: p.stack}
	}
	if e, ok := domain.AsError(err); ok {
		msg := e.Message
		if msg == "" || e != err {
			msg = err.Error()
		}
		return &domain.ErrorInfo{Code: e.Code, Message: msg, Context: e.Context, Retryable: e.Retryable}
	}
	return &domain.ErrorInfo{Code: domain.CodeExecutionError, Message: err.Error(), Retryable: true}
}

// stamp addresses res to task exactly as the engine sent it; id is
// task.ID(), which callers know already.
func stamp(res *domain.Result, task *domain.Task, id string) {
	res.TaskID = id
	res.RunID = task.RunID
	res.NodeID = task.NodeID
	res.Attempt = task.Attempt
	res.ExecutionToken = task.ExecutionToken
	res.Trace = task.Trace
}
