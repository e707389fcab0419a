package app_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
)

// The helpers of this file are prefixed with "invoke" so that they do not
// collide with the runtime tests' doubles in the same package.

// invokePromptly bounds how long a test waits for Invoke to answer something
// it should answer at once; it is generous so that a loaded CI machine does
// not flake, and far below the deadlines the tests rule out.
const invokePromptly = 5 * time.Second

// invokeNoDeadline is the default timeout of tests that are not about
// timeouts: long enough never to fire.
const invokeNoDeadline = time.Hour

// newInvokeTask returns a task whose identity fields are all set and all
// distinct from what the test handlers put in their results.
func newInvokeTask() *domain.Task {
	return &domain.Task{
		TaskID:         "task-1",
		RunID:          "run-1",
		NodeID:         "node-1",
		Attempt:        2,
		ExecutionToken: "token-1",
		ExecutorType:   "invoke-test",
		Context:        map[string]any{},
	}
}

// invokeAwait calls Invoke and fails the test unless it returns within
// invokePromptly.
func invokeAwait(t *testing.T, ctx context.Context, ex domain.Executor, task *domain.Task, defaultTimeout time.Duration) domain.Result {
	t.Helper()
	results := make(chan domain.Result, 1)
	go func() { results <- app.Invoke(ctx, ex, task, defaultTimeout) }()
	select {
	case res := <-results:
		return res
	case <-time.After(invokePromptly):
		t.Fatalf("Invoke did not return within %s", invokePromptly)
		return domain.Result{}
	}
}

// invokeBlockUntilTestEnds returns a channel that closes when the test ends,
// so that a handler which ignores its context, and which Invoke abandons,
// returns once the test is over instead of leaking for the rest of the run.
func invokeBlockUntilTestEnds(t *testing.T) <-chan struct{} {
	released := make(chan struct{})
	t.Cleanup(func() { close(released) })
	return released
}

// invokeExecutor runs a test-supplied function as its Execute.
type invokeExecutor struct {
	execute func(ctx context.Context, task *domain.Task) (*domain.Result, error)
}

func (invokeExecutor) Descriptor() domain.Descriptor {
	return domain.Descriptor{Type: "invoke-test"}
}

func (e invokeExecutor) Execute(ctx context.Context, task *domain.Task) (*domain.Result, error) {
	return e.execute(ctx, task)
}

// invokeReturning is an executor whose handler returns res and err.
func invokeReturning(res *domain.Result, err error) invokeExecutor {
	return invokeExecutor{execute: func(context.Context, *domain.Task) (*domain.Result, error) { return res, err }}
}

// invokeHookedExecutor implements every per-task hook, records the order in
// which Invoke calls them, and remembers what OnError and AfterExecute saw.
// Nil functions default to: BeforeExecute succeeds, OnError returns nil,
// AfterExecute does nothing more than record.
type invokeHookedExecutor struct {
	execute func(ctx context.Context, task *domain.Task) (*domain.Result, error)
	before  func(ctx context.Context, task *domain.Task) error
	onError func(ctx context.Context, task *domain.Task, err error) *domain.Result
	after   func(ctx context.Context, task *domain.Task, res *domain.Result)

	mu          sync.Mutex
	calls       []string
	onErrorSaw  error
	afterSaw    domain.Result
	afterCalled bool
}

var (
	_ domain.BeforeExecuteHook = (*invokeHookedExecutor)(nil)
	_ domain.ErrorHook         = (*invokeHookedExecutor)(nil)
	_ domain.AfterExecuteHook  = (*invokeHookedExecutor)(nil)
)

func (h *invokeHookedExecutor) record(call string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, call)
}

func (h *invokeHookedExecutor) recorded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func (h *invokeHookedExecutor) Descriptor() domain.Descriptor {
	return domain.Descriptor{Type: "invoke-test"}
}

func (h *invokeHookedExecutor) BeforeExecute(ctx context.Context, task *domain.Task) error {
	h.record("before")
	if h.before != nil {
		return h.before(ctx, task)
	}
	return nil
}

func (h *invokeHookedExecutor) Execute(ctx context.Context, task *domain.Task) (*domain.Result, error) {
	h.record("execute")
	return h.execute(ctx, task)
}

func (h *invokeHookedExecutor) OnError(ctx context.Context, task *domain.Task, err error) *domain.Result {
	h.record("onError")
	h.mu.Lock()
	h.onErrorSaw = err
	h.mu.Unlock()
	if h.onError != nil {
		return h.onError(ctx, task, err)
	}
	return nil
}

func (h *invokeHookedExecutor) AfterExecute(ctx context.Context, task *domain.Task, res *domain.Result) {
	h.record("after")
	h.mu.Lock()
	h.afterSaw, h.afterCalled = *res, true
	h.mu.Unlock()
	if h.after != nil {
		h.after(ctx, task, res)
	}
}

// requireInvokeIdentity fails the test unless res is addressed to task.
func requireInvokeIdentity(t *testing.T, task *domain.Task, res domain.Result) {
	t.Helper()
	require.Equal(t, task.ID(), res.TaskID, "TaskID")
	require.Equal(t, task.RunID, res.RunID, "RunID")
	require.Equal(t, task.NodeID, res.NodeID, "NodeID")
	require.Equal(t, task.Attempt, res.Attempt, "Attempt")
	require.Equal(t, task.ExecutionToken, res.ExecutionToken, "ExecutionToken")
}

func TestInvokeCompletesWithTheHandlersOutput(t *testing.T) {
	task := newInvokeTask()
	ex := invokeReturning(&domain.Result{Status: domain.StatusCompleted, Output: map[string]any{"tax": 10.0}}, nil)

	res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)

	assert.Equal(t, domain.StatusCompleted, res.Status)
	assert.Equal(t, map[string]any{"tax": 10.0}, res.Output)
	assert.Nil(t, res.Error)
	requireInvokeIdentity(t, task, res)
}

func TestInvokeOverwritesIdentityFromTheTask(t *testing.T) {
	task := newInvokeTask()
	ex := invokeReturning(&domain.Result{
		TaskID:         "forged-task",
		RunID:          "forged-run",
		NodeID:         "forged-node",
		Attempt:        99,
		ExecutionToken: "forged-token",
		Status:         domain.StatusCompleted,
	}, nil)

	res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)

	requireInvokeIdentity(t, task, res)
	assert.Equal(t, "task-1", res.TaskID)
}

func TestInvokeTaskIDFallsBackToTheKey(t *testing.T) {
	tests := []struct {
		name string
		ex   domain.Executor
	}{
		{"completed", invokeReturning(&domain.Result{Status: domain.StatusCompleted, TaskID: "forged"}, nil)},
		{"returned error", invokeReturning(nil, errors.New("boom"))},
		{"nil result", invokeReturning(nil, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := newInvokeTask()
			task.TaskID = ""
			res := invokeAwait(t, context.Background(), tt.ex, task, invokeNoDeadline)
			assert.Equal(t, "run-1:node-1:2", res.TaskID)
			requireInvokeIdentity(t, task, res)
		})
	}
}

func TestInvokeSetsDurationAndCompletedAt(t *testing.T) {
	before := time.Now().UTC()
	res := invokeAwait(t, context.Background(), invokeReturning(&domain.Result{Status: domain.StatusCompleted}, nil), newInvokeTask(), invokeNoDeadline)
	after := time.Now().UTC()

	assert.Positive(t, res.Duration)
	assert.Equal(t, time.UTC, res.CompletedAt.Location(), "CompletedAt must be UTC")
	assert.False(t, res.CompletedAt.Before(before) || res.CompletedAt.After(after),
		"CompletedAt %s is outside [%s, %s]", res.CompletedAt, before, after)
}

func TestInvokeTimeoutAbandonsAHandlerThatIgnoresItsContext(t *testing.T) {
	released := invokeBlockUntilTestEnds(t)
	ex := invokeExecutor{execute: func(context.Context, *domain.Task) (*domain.Result, error) {
		<-released
		return &domain.Result{Status: domain.StatusCompleted}, nil
	}}
	task := newInvokeTask()
	task.Timeout = 20 * time.Millisecond

	res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)

	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeTimeout, res.Error.Code)
	assert.True(t, res.Error.Retryable, "a timeout may succeed on another attempt")
	assert.Contains(t, res.Error.Message, "20ms")
	assert.Positive(t, res.Duration)
	assert.False(t, res.CompletedAt.IsZero())
	requireInvokeIdentity(t, task, res)
}

func TestInvokeTimeouts(t *testing.T) {
	returnsCtxErr := invokeExecutor{execute: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	tests := []struct {
		name           string
		taskTimeout    time.Duration
		defaultTimeout time.Duration
		parentDeadline time.Duration
	}{
		{"task timeout, handler returns ctx.Err", 20 * time.Millisecond, invokeNoDeadline, 0},
		{"default timeout when the task has none", 0, 20 * time.Millisecond, 0},
		{"deadline of the caller's context", 0, invokeNoDeadline, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.parentDeadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.parentDeadline)
				defer cancel()
			}
			task := newInvokeTask()
			task.Timeout = tt.taskTimeout

			res := invokeAwait(t, ctx, returnsCtxErr, task, tt.defaultTimeout)

			assert.Equal(t, domain.StatusFailed, res.Status)
			require.NotNil(t, res.Error)
			assert.Equal(t, domain.CodeTimeout, res.Error.Code)
			assert.True(t, res.Error.Retryable)
			requireInvokeIdentity(t, task, res)
		})
	}
}

// explodeInHandler panics; its name must appear in the PANIC result's stack.
func explodeInHandler() {
	panic("ledger corrupted")
}

func TestInvokePanicYieldsPanicWithTheStack(t *testing.T) {
	ex := invokeExecutor{execute: func(context.Context, *domain.Task) (*domain.Result, error) {
		explodeInHandler()
		return &domain.Result{Status: domain.StatusCompleted}, nil
	}}
	task := newInvokeTask()

	res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)

	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodePanic, res.Error.Code)
	assert.Contains(t, res.Error.Message, "ledger corrupted")
	assert.Contains(t, res.Error.StackTrace, "explodeInHandler")
	requireInvokeIdentity(t, task, res)
}

func TestInvokePanicWithAnErrorValue(t *testing.T) {
	ex := invokeExecutor{execute: func(context.Context, *domain.Task) (*domain.Result, error) {
		panic(&domain.Error{Code: "DECLINED", Message: "should not pass as a returned error"})
	}}
	res := invokeAwait(t, context.Background(), ex, newInvokeTask(), invokeNoDeadline)

	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodePanic, res.Error.Code, "a panic is a panic whatever its value")
}

func TestInvokeReturnedDomainErrorSetsTheCode(t *testing.T) {
	declined := &domain.Error{
		Code:      "PAYMENT_DECLINED",
		Message:   "card declined",
		Retryable: true,
		Context:   map[string]any{"customerId": "CUST-7"},
	}
	tests := []struct {
		name        string
		err         error
		wantMessage string
	}{
		{"direct", declined, "card declined"},
		{"wrapped with %w", fmt.Errorf("charge order 7: %w", declined), "charge order 7: PAYMENT_DECLINED: card declined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := newInvokeTask()
			res := invokeAwait(t, context.Background(), invokeReturning(nil, tt.err), task, invokeNoDeadline)

			assert.Equal(t, domain.StatusFailed, res.Status)
			require.NotNil(t, res.Error)
			assert.Equal(t, "PAYMENT_DECLINED", res.Error.Code)
			assert.Equal(t, tt.wantMessage, res.Error.Message)
			assert.True(t, res.Error.Retryable)
			assert.Equal(t, map[string]any{"customerId": "CUST-7"}, res.Error.Context)
			requireInvokeIdentity(t, task, res)
		})
	}

	t.Run("permanent", func(t *testing.T) {
		res := invokeAwait(t, context.Background(), invokeReturning(nil, domain.NewError("INVALID_ORDER", "bad id")), newInvokeTask(), invokeNoDeadline)
		require.NotNil(t, res.Error)
		assert.Equal(t, "INVALID_ORDER", res.Error.Code)
		assert.False(t, res.Error.Retryable)
	})
}

func TestInvokePlainErrorIsARetryableExecutionError(t *testing.T) {
	task := newInvokeTask()
	res := invokeAwait(t, context.Background(), invokeReturning(nil, errors.New("database unreachable")), task, invokeNoDeadline)

	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeExecutionError, res.Error.Code)
	assert.Equal(t, "database unreachable", res.Error.Message)
	assert.True(t, res.Error.Retryable)
	requireInvokeIdentity(t, task, res)
}

func TestInvokeCancellation(t *testing.T) {
	tests := []struct {
		name          string
		cause         error
		ignoresCtx    bool
		wantStatus    domain.Status
		wantCode      string
		wantRetryable bool
	}{
		{"engine cancellation cause", &domain.Error{Code: domain.CodeCancelled, Message: "cancelled by the engine"}, false, domain.StatusCancelled, domain.CodeCancelled, false},
		{"plain cancel", nil, false, domain.StatusCancelled, domain.CodeCancelled, false},
		{"shutdown cause", &domain.Error{Code: domain.CodeShutdown, Message: "stopping", Retryable: true}, false, domain.StatusFailed, domain.CodeShutdown, true},
		{"engine cancellation of a handler that ignores ctx", &domain.Error{Code: domain.CodeCancelled}, true, domain.StatusCancelled, domain.CodeCancelled, false},
		{"plain cancel of a handler that ignores ctx", nil, true, domain.StatusCancelled, domain.CodeCancelled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			released := invokeBlockUntilTestEnds(t)
			started := make(chan struct{})
			ex := invokeExecutor{execute: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
				close(started)
				if tt.ignoresCtx {
					<-released
					return &domain.Result{Status: domain.StatusCompleted}, nil
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}}
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			task := newInvokeTask()

			results := make(chan domain.Result, 1)
			go func() { results <- app.Invoke(ctx, ex, task, invokeNoDeadline) }()
			select {
			case <-started:
			case <-time.After(invokePromptly):
				t.Fatal("the handler never started")
			}
			cancel(tt.cause)

			select {
			case res := <-results:
				assert.Equal(t, tt.wantStatus, res.Status)
				require.NotNil(t, res.Error)
				assert.Equal(t, tt.wantCode, res.Error.Code)
				assert.Equal(t, tt.wantRetryable, res.Error.Retryable)
				requireInvokeIdentity(t, task, res)
			case <-time.After(invokePromptly):
				t.Fatal("Invoke did not return after cancellation")
			}
		})
	}
}

func TestInvokeNormalisesWhatTheHandlerReturned(t *testing.T) {
	handlerError := &domain.ErrorInfo{Code: "BUSINESS", Message: "rejected"}
	tests := []struct {
		name           string
		res            *domain.Result
		wantStatus     domain.Status
		wantCode       string
		wantMessageHas string
		wantOutput     map[string]any
	}{
		{"neither result nor error", nil, domain.StatusFailed, domain.CodeExecutionError, "neither a result nor an error", nil},
		{"unknown status", &domain.Result{Status: "DONE", Output: map[string]any{"x": 1}}, domain.StatusFailed, domain.CodeExecutionError, `unknown status "DONE"`, nil},
		{"lower-case status", &domain.Result{Status: "completed"}, domain.StatusFailed, domain.CodeExecutionError, `unknown status "completed"`, nil},
		{"no status and no error", &domain.Result{Output: map[string]any{"x": 1}}, domain.StatusCompleted, "", "", map[string]any{"x": 1}},
		{"no status with an error", &domain.Result{Error: handlerError}, domain.StatusFailed, "BUSINESS", "rejected", nil},
		{"FAILED without an error", &domain.Result{Status: domain.StatusFailed}, domain.StatusFailed, domain.CodeExecutionError, "FAILED without an error", nil},
		{"CANCELLED without an error", &domain.Result{Status: domain.StatusCancelled}, domain.StatusCancelled, domain.CodeExecutionError, "CANCELLED without an error", nil},
		{"SKIPPED", &domain.Result{Status: domain.StatusSkipped, Output: map[string]any{"why": "noop"}}, domain.StatusSkipped, "", "", map[string]any{"why": "noop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := newInvokeTask()
			res := invokeAwait(t, context.Background(), invokeReturning(tt.res, nil), task, invokeNoDeadline)

			assert.Equal(t, tt.wantStatus, res.Status)
			if tt.wantCode == "" {
				assert.Nil(t, res.Error)
			} else {
				require.NotNil(t, res.Error)
				assert.Equal(t, tt.wantCode, res.Error.Code)
				assert.Contains(t, res.Error.Message, tt.wantMessageHas)
			}
			assert.Equal(t, tt.wantOutput, res.Output)
			requireInvokeIdentity(t, task, res)
		})
	}
}

func TestInvokeDoesNotMutateTheHandlersResult(t *testing.T) {
	returned := &domain.Result{Status: domain.StatusCompleted, RunID: "handler-run"}
	invokeAwait(t, context.Background(), invokeReturning(returned, nil), newInvokeTask(), invokeNoDeadline)
	assert.Equal(t, "handler-run", returned.RunID)
}

func TestInvokeHookOrderOnSuccess(t *testing.T) {
	ex := &invokeHookedExecutor{execute: func(context.Context, *domain.Task) (*domain.Result, error) {
		return &domain.Result{Status: domain.StatusCompleted, Output: map[string]any{"ok": true}}, nil
	}}
	res := invokeAwait(t, context.Background(), ex, newInvokeTask(), invokeNoDeadline)

	assert.Equal(t, []string{"before", "execute", "after"}, ex.recorded())
	assert.Equal(t, domain.StatusCompleted, res.Status)
}

func TestInvokeHookOrderOnError(t *testing.T) {
	handlerErr := errors.New("database unreachable")
	ex := &invokeHookedExecutor{execute: func(context.Context, *domain.Task) (*domain.Result, error) {
		return nil, handlerErr
	}}
	res := invokeAwait(t, context.Background(), ex, newInvokeTask(), invokeNoDeadline)

	assert.Equal(t, []string{"before", "execute", "onError", "after"}, ex.recorded())
	assert.ErrorIs(t, ex.onErrorSaw, handlerErr, "OnError receives the handler's error")
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeExecutionError, res.Error.Code, "a nil OnError result keeps the runtime's")
}

func TestInvokeBeforeExecuteErrorSkipsExecute(t *testing.T) {
	ex := &invokeHookedExecutor{
		before: func(context.Context, *domain.Task) error {
			return domain.NewError("UNAUTHORIZED", "tenant suspended")
		},
		execute: func(context.Context, *domain.Task) (*domain.Result, error) {
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	task := newInvokeTask()
	res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)

	calls := ex.recorded()
	assert.NotContains(t, calls, "execute")
	require.NotEmpty(t, calls)
	assert.Equal(t, "before", calls[0])
	assert.Equal(t, "after", calls[len(calls)-1])
	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, "UNAUTHORIZED", res.Error.Code)
	assert.Contains(t, res.Error.Message, "before execute")
	requireInvokeIdentity(t, task, res)
}

func TestInvokeBeforeExecutePanicSkipsExecute(t *testing.T) {
	ex := &invokeHookedExecutor{
		before: func(context.Context, *domain.Task) error { panic("hook bug") },
		execute: func(context.Context, *domain.Task) (*domain.Result, error) {
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	res := invokeAwait(t, context.Background(), ex, newInvokeTask(), invokeNoDeadline)

	assert.NotContains(t, ex.recorded(), "execute")
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodePanic, res.Error.Code)
}

func TestInvokeOnErrorReplacementIsUsed(t *testing.T) {
	tests := []struct {
		name    string
		execute func(context.Context, *domain.Task) (*domain.Result, error)
		sawHas  string
	}{
		{"returned error", func(context.Context, *domain.Task) (*domain.Result, error) {
			return nil, errors.New("cache miss")
		}, "cache miss"},
		{"panic", func(context.Context, *domain.Task) (*domain.Result, error) {
			panic("nil map")
		}, "handler panicked: nil map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := &invokeHookedExecutor{
				execute: tt.execute,
				onError: func(context.Context, *domain.Task, error) *domain.Result {
					return &domain.Result{Status: domain.StatusCompleted, RunID: "forged", Output: map[string]any{"fallback": true}}
				},
			}
			task := newInvokeTask()
			res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)

			assert.Equal(t, domain.StatusCompleted, res.Status)
			assert.Equal(t, map[string]any{"fallback": true}, res.Output)
			assert.Nil(t, res.Error)
			requireInvokeIdentity(t, task, res)
			assert.ErrorContains(t, ex.onErrorSaw, tt.sawHas)
			assert.Equal(t, domain.StatusCompleted, ex.afterSaw.Status, "AfterExecute sees the replacement")
		})
	}
}

func TestInvokePanickingOnErrorDoesNotHideTheFailure(t *testing.T) {
	ex := &invokeHookedExecutor{
		execute: func(context.Context, *domain.Task) (*domain.Result, error) {
			return nil, domain.NewError("DECLINED", "card declined")
		},
		onError: func(context.Context, *domain.Task, error) *domain.Result { panic("hook bug") },
	}
	res := invokeAwait(t, context.Background(), ex, newInvokeTask(), invokeNoDeadline)

	assert.Contains(t, ex.recorded(), "onError")
	assert.Equal(t, domain.StatusFailed, res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, "DECLINED", res.Error.Code)
}

func TestInvokeAfterExecuteSeesTheFinalResult(t *testing.T) {
	tests := []struct {
		name     string
		timeout  time.Duration
		execute  func(released <-chan struct{}) func(context.Context, *domain.Task) (*domain.Result, error)
		wantCode string
	}{
		{"completed", 0, func(<-chan struct{}) func(context.Context, *domain.Task) (*domain.Result, error) {
			return func(context.Context, *domain.Task) (*domain.Result, error) {
				return &domain.Result{Status: domain.StatusCompleted, RunID: "forged"}, nil
			}
		}, ""},
		{"returned error", 0, func(<-chan struct{}) func(context.Context, *domain.Task) (*domain.Result, error) {
			return func(context.Context, *domain.Task) (*domain.Result, error) {
				return nil, domain.NewError("DECLINED", "card declined")
			}
		}, "DECLINED"},
		{"timeout", 20 * time.Millisecond, func(released <-chan struct{}) func(context.Context, *domain.Task) (*domain.Result, error) {
			return func(context.Context, *domain.Task) (*domain.Result, error) {
				<-released
				return &domain.Result{Status: domain.StatusCompleted}, nil
			}
		}, domain.CodeTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			ex := &invokeHookedExecutor{execute: tt.execute(release)}
			task := newInvokeTask()
			task.Timeout = tt.timeout

			res := invokeAwait(t, context.Background(), ex, task, invokeNoDeadline)
			afterCalled := func() bool {
				ex.mu.Lock()
				defer ex.mu.Unlock()
				return ex.afterCalled
			}
			if tt.timeout > 0 {
				// The handler still runs: AfterExecute waits for it.
				assert.False(t, afterCalled(), "AfterExecute ran while the abandoned handler still ran")
			}
			close(release)
			require.Eventually(t, afterCalled, invokePromptly, time.Millisecond, "AfterExecute was not called")
			ex.mu.Lock()
			saw := ex.afterSaw
			ex.mu.Unlock()
			assert.Equal(t, res, saw, "AfterExecute must see exactly the result Invoke returns")
			assert.Positive(t, saw.Duration, "timing is set before AfterExecute")
			assert.False(t, saw.CompletedAt.IsZero(), "timing is set before AfterExecute")
			if tt.wantCode != "" {
				require.NotNil(t, saw.Error)
				assert.Equal(t, tt.wantCode, saw.Error.Code)
			}
			requireInvokeIdentity(t, task, saw)
		})
	}
}

func TestInvokePanickingAfterExecuteKeepsTheResult(t *testing.T) {
	ex := &invokeHookedExecutor{
		execute: func(context.Context, *domain.Task) (*domain.Result, error) {
			return &domain.Result{Status: domain.StatusCompleted, Output: map[string]any{"ok": true}}, nil
		},
		after: func(context.Context, *domain.Task, *domain.Result) { panic("metrics bug") },
	}
	res := invokeAwait(t, context.Background(), ex, newInvokeTask(), invokeNoDeadline)

	assert.Equal(t, domain.StatusCompleted, res.Status)
	assert.Equal(t, map[string]any{"ok": true}, res.Output)
}
