package app

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

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
//     it runs, with the decided result, once the handler has returned.
//
// The runtime's workers and the executortest harness both run tasks this
// way, so a handler behaves the same in unit tests and in production.
func Invoke(ctx context.Context, ex domain.Executor, task *domain.Task, defaultTimeout time.Duration) domain.Result {
	return invoke(ctx, ex, task, defaultTimeout).result
}

// invocation is what invoke returns: the task's result, and the state of
// the handler, which may outlive it.
type invocation struct {
	result domain.Result
	// handlerDone is closed once the handler has returned (and, if it was
	// abandoned, its AfterExecute hook has run).
	handlerDone <-chan struct{}
	// abandoned: the result was decided when the handler's context ended,
	// and the handler was still running then.
	abandoned bool
}

func invoke(ctx context.Context, ex domain.Executor, task *domain.Task, defaultTimeout time.Duration) invocation {
	timeout := task.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, &domain.Error{
			Code:      domain.CodeTimeout,
			Message:   fmt.Sprintf("task exceeded its %s timeout", timeout),
			Retryable: true,
		})
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	after, hasAfter := ex.(domain.AfterExecuteHook)

	started := time.Now()
	// outcome is unbuffered: the handler's outcome is handed over only to an
	// invoke still waiting for it. Once invoke has abandoned the handler, it
	// sends the decided result on abandoned instead, for AfterExecute.
	outcome := make(chan handlerOutcome)
	abandoned := make(chan domain.Result, 1)
	handlerDone := make(chan struct{})
	go func() {
		defer close(handlerDone)
		o := runHandler(ctx, ex, task)
		select {
		case outcome <- o:
		case res := <-abandoned:
			if hasAfter {
				callAfterHook(ctx, after, task, &res)
			}
		}
	}()

	var res domain.Result
	wasAbandoned := false
	select {
	case o := <-outcome:
		res = o.toResult(ctx, task)
	case <-ctx.Done():
		// A handler that watches ctx is returning now, but its goroutine may
		// not have run yet. Taken for one that ignores ctx, it would hold its
		// slot as abandoned, and when every slot of its type is so held, for
		// an instant, the type's waiting tasks would be answered
		// HANDLERS_STALLED without running.
		grace := time.NewTimer(abandonGrace)
		select {
		case o := <-outcome: // returned within the grace: its own answer wins
			res = o.toResult(ctx, task)
		case <-grace.C:
			res = causeResult(ctx, task)
			wasAbandoned = true
		}
		grace.Stop()
	}
	res.Duration = time.Since(started)
	res.CompletedAt = time.Now().UTC()
	res = res.Bounded()
	switch {
	case wasAbandoned:
		abandoned <- res // buffered: never blocks
	case hasAfter:
		callAfterHook(ctx, after, task, &res)
	}
	return invocation{result: res, handlerDone: handlerDone, abandoned: wasAbandoned}
}

// abandonGrace is how long a handler has to return once its context has
// ended before it is taken to ignore its context and abandoned. It is far
// longer than a handler watching ctx needs to return, and short enough that
// the task's answer is still given at about its deadline.
const abandonGrace = 100 * time.Millisecond

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

// result turns what the handler returned into a well-formed result.
func (o handlerOutcome) toResult(ctx context.Context, task *domain.Task) domain.Result {
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
	stamp(&res, task)
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

// stamp addresses res to task exactly as the engine sent it.
func stamp(res *domain.Result, task *domain.Task) {
	res.TaskID = task.ID()
	res.RunID = task.RunID
	res.NodeID = task.NodeID
	res.Attempt = task.Attempt
	res.ExecutionToken = task.ExecutionToken
}
