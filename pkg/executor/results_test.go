package executor_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/pkg/executor"
)

func TestSuccess(t *testing.T) {
	out := map[string]any{"tax": 10.0}
	res := executor.Success(out)
	assert.Equal(t, executor.StatusCompleted, res.Status)
	assert.Equal(t, out, res.Output)
	assert.Nil(t, res.Error)
}

func TestSkipped(t *testing.T) {
	res := executor.Skipped(map[string]any{"reason": "nothing to do"})
	assert.Equal(t, executor.StatusSkipped, res.Status)
	assert.Equal(t, map[string]any{"reason": "nothing to do"}, res.Output)
	assert.Nil(t, res.Error)
}

func TestFailureIsPermanent(t *testing.T) {
	res := executor.Failure("INVALID_ORDER", "bad id")
	assert.Equal(t, executor.StatusFailed, res.Status)
	assert.Equal(t, &executor.ErrorInfo{Code: "INVALID_ORDER", Message: "bad id"}, res.Error)
	assert.Nil(t, res.Output)
}

func TestFailureWithContext(t *testing.T) {
	res := executor.FailureWithContext("INVALID_ORDER", "bad id", map[string]any{"orderId": "X"})
	assert.Equal(t, executor.StatusFailed, res.Status)
	assert.Equal(t, &executor.ErrorInfo{Code: "INVALID_ORDER", Message: "bad id", Context: map[string]any{"orderId": "X"}}, res.Error)
}

func TestRetryableFailure(t *testing.T) {
	res := executor.RetryableFailure("UPSTREAM", "gateway down")
	assert.Equal(t, executor.StatusFailed, res.Status)
	assert.Equal(t, &executor.ErrorInfo{Code: "UPSTREAM", Message: "gateway down", Retryable: true}, res.Error)
}

func TestResultHelpersReturnIndependentResults(t *testing.T) {
	a, b := executor.Failure("A", "a"), executor.Failure("A", "a")
	a.Error.Retryable = true
	assert.False(t, b.Error.Retryable)
}

func TestFailIsAPermanentCodedError(t *testing.T) {
	err := executor.Fail("DECLINED", "card %s declined", "1234")
	e, ok := errorAs(err)
	require.True(t, ok, "Fail must return an *executor.Error")
	assert.Equal(t, "DECLINED", e.Code)
	assert.Equal(t, "card 1234 declined", e.Message)
	assert.False(t, e.Retryable)
	assert.Equal(t, "DECLINED: card 1234 declined", err.Error())
}

func TestRetryableWrapsItsCause(t *testing.T) {
	cause := errors.New("connection refused")
	err := executor.Retryable("UPSTREAM", cause)
	assert.ErrorIs(t, err, cause)
	e, ok := errorAs(err)
	require.True(t, ok)
	assert.Equal(t, "UPSTREAM", e.Code)
	assert.True(t, e.Retryable)
	assert.Equal(t, "UPSTREAM: connection refused", err.Error())
}

func TestPermanent(t *testing.T) {
	cause := errors.New("connection refused")

	t.Run("nil stays nil", func(t *testing.T) {
		assert.NoError(t, executor.Permanent(nil))
	})

	t.Run("plain error becomes a permanent EXECUTION_ERROR", func(t *testing.T) {
		err := executor.Permanent(cause)
		assert.ErrorIs(t, err, cause)
		e, ok := errorAs(err)
		require.True(t, ok)
		assert.Equal(t, executor.CodeExecutionError, e.Code)
		assert.False(t, e.Retryable)
	})

	t.Run("retryable coded error keeps its code and becomes permanent", func(t *testing.T) {
		retryable := executor.Retryable("UPSTREAM", cause)
		err := executor.Permanent(retryable)
		assert.ErrorIs(t, err, cause)
		e, ok := errorAs(err)
		require.True(t, ok)
		assert.Equal(t, "UPSTREAM", e.Code)
		assert.False(t, e.Retryable)

		original, _ := errorAs(retryable)
		assert.True(t, original.Retryable, "Permanent must not change its argument")
	})

	t.Run("wrapped coded error keeps its code", func(t *testing.T) {
		err := executor.Permanent(fmt.Errorf("charge: %w", executor.Retryable("UPSTREAM", cause)))
		e, ok := errorAs(err)
		require.True(t, ok)
		assert.Equal(t, "UPSTREAM", e.Code)
		assert.False(t, e.Retryable)
	})
}

// errorAs finds the first *executor.Error in err's chain.
func errorAs(err error) (*executor.Error, bool) {
	var e *executor.Error
	ok := errors.As(err, &e)
	return e, ok
}
