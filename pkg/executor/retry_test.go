package executor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/pkg/executor/executortest"
)

// fast keeps retry tests quick: every backoff delay is one millisecond.
var fast = executor.WithBackoff(time.Millisecond, time.Millisecond)

// forever is a backoff no test waits out: a test that returns with it has
// proved that the wait ended early.
var forever = executor.WithBackoff(time.Hour, time.Hour)

// promptly bounds how long a test waits for something that should happen at
// once; it is generous so that a loaded CI machine does not flake.
const promptly = 5 * time.Second

var errFlaky = errors.New("gateway unavailable")

func TestRetryStopsAtAtMostWithTheAttemptCount(t *testing.T) {
	var calls atomic.Int32
	err := executor.Retry(context.Background(), func(context.Context) error {
		calls.Add(1)
		return errFlaky
	}, fast, executor.AtMost(4))

	assert.Equal(t, int32(4), calls.Load())
	assert.ErrorIs(t, err, errFlaky)
	assert.ErrorContains(t, err, "4 attempts")
}

func TestRetryMakesThreeAttemptsByDefault(t *testing.T) {
	var calls atomic.Int32
	err := executor.Retry(context.Background(), func(context.Context) error {
		calls.Add(1)
		return errFlaky
	}, fast)

	assert.Equal(t, int32(3), calls.Load())
	assert.ErrorContains(t, err, "3 attempts")
}

func TestRetryMakesAtLeastOneAttempt(t *testing.T) {
	for _, n := range []int{0, -1} {
		var calls atomic.Int32
		err := executor.Retry(context.Background(), func(context.Context) error {
			calls.Add(1)
			return errFlaky
		}, fast, executor.AtMost(n))
		assert.Equal(t, int32(1), calls.Load(), "AtMost(%d)", n)
		assert.ErrorIs(t, err, errFlaky)
	}
}

func TestRetryRetriesRetryableCodedErrors(t *testing.T) {
	var calls atomic.Int32
	err := executor.Retry(context.Background(), func(context.Context) error {
		calls.Add(1)
		return executor.Retryable("UPSTREAM", errFlaky)
	}, fast, executor.AtMost(3))

	assert.Equal(t, int32(3), calls.Load())
	assert.ErrorIs(t, err, errFlaky)
}

func TestRetryStopsAtOnceOnAPermanentError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"Fail", executor.Fail("DECLINED", "card declined"), "DECLINED"},
		{"Permanent of a plain error", executor.Permanent(errFlaky), executor.CodeExecutionError},
		{"Permanent of a retryable error", executor.Permanent(executor.Retryable("UPSTREAM", errFlaky)), "UPSTREAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			err := executor.Retry(context.Background(), func(context.Context) error {
				calls.Add(1)
				return tt.err
			}, forever, executor.AtMost(5))

			assert.Equal(t, int32(1), calls.Load())
			e, ok := errorAs(err)
			require.True(t, ok, "the coded error must survive: %v", err)
			assert.Equal(t, tt.code, e.Code)
		})
	}
}

func TestRetryReturnsNilOnALaterSuccess(t *testing.T) {
	var calls atomic.Int32
	err := executor.Retry(context.Background(), func(context.Context) error {
		if calls.Add(1) < 3 {
			return errFlaky
		}
		return nil
	}, fast, executor.AtMost(5), executor.WithMultiplier(1.5), executor.WithJitter(0.1))

	assert.NoError(t, err)
	assert.Equal(t, int32(3), calls.Load(), "no attempt after the first success")
}

func TestRetryPassesItsContextToTheOperation(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "marker")
	err := executor.Retry(ctx, func(ctx context.Context) error {
		if ctx.Value(key{}) != "marker" {
			return executor.Fail("WRONG_CONTEXT", "operation got another context")
		}
		return nil
	})
	assert.NoError(t, err)
}

func TestRetryDoesNotStartWhenTheContextHasEnded(t *testing.T) {
	cause := errors.New("engine cancelled the task")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)

	var calls atomic.Int32
	err := executor.Retry(ctx, func(context.Context) error {
		calls.Add(1)
		return nil
	}, fast)

	assert.Equal(t, int32(0), calls.Load())
	assert.ErrorIs(t, err, cause)
}

func TestRetryStopsWaitingWhenTheContextEnds(t *testing.T) {
	cause := errors.New("engine cancelled the task")
	ctx, cancel := context.WithCancelCause(context.Background())

	var calls atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- executor.Retry(ctx, func(context.Context) error {
			calls.Add(1)
			cancel(cause) // cancelled while the backoff is about to wait an hour
			return errFlaky
		}, forever, executor.AtMost(5))
	}()

	select {
	case err := <-done:
		assert.Equal(t, int32(1), calls.Load())
		assert.ErrorIs(t, err, cause, "the caller must learn why Retry stopped")
		assert.ErrorIs(t, err, errFlaky, "and what the last attempt said")
		assert.ErrorContains(t, err, "1 attempts")
	case <-time.After(promptly):
		t.Fatal("Retry kept waiting after its context was cancelled")
	}
}

// TestRetryInterruptedByTheTaskTimeoutReportsTimeout runs Retry inside a
// handler whose task times out during the backoff: the runtime must report
// TIMEOUT, not the last attempt's error.
func TestRetryInterruptedByTheTaskTimeoutReportsTimeout(t *testing.T) {
	h := executortest.New(t, retryingExecutor{})
	task := executortest.NewTask("retrying", nil)
	task.Timeout = 20 * time.Millisecond

	res := h.Execute(context.Background(), task)
	executortest.RequireFailed(t, res, executor.CodeTimeout)
}

// retryingExecutor retries a call that always fails with an hour between
// attempts, returning whatever Retry returns.
type retryingExecutor struct{}

func (retryingExecutor) Descriptor() executor.Descriptor {
	return executor.Descriptor{Type: "retrying"}
}

func (retryingExecutor) Execute(ctx context.Context, _ *executor.Task) (*executor.Result, error) {
	err := executor.Retry(ctx, func(context.Context) error {
		return executor.Retryable("UPSTREAM", errFlaky)
	}, forever, executor.AtMost(5))
	return nil, err
}

func TestRetryValueReturnsTheValue(t *testing.T) {
	var calls atomic.Int32
	v, err := executor.RetryValue(context.Background(), func(context.Context) (string, error) {
		if calls.Add(1) < 2 {
			return "partial", errFlaky
		}
		return "TXN-1", nil
	}, fast)

	require.NoError(t, err)
	assert.Equal(t, "TXN-1", v)
	assert.Equal(t, int32(2), calls.Load())
}

func TestRetryValueReturnsTheZeroValueOnFailure(t *testing.T) {
	v, err := executor.RetryValue(context.Background(), func(context.Context) (int, error) {
		return 42, errFlaky
	}, fast, executor.AtMost(2))

	assert.ErrorIs(t, err, errFlaky)
	assert.Zero(t, v, "a failed RetryValue must not leak a partial value")
}
