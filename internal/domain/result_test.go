package domain

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTooLargeKeepsIdentityAndDropsOutput(t *testing.T) {
	done := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	r := Result{TaskID: "t1", RunID: "run-1", NodeID: "n1", Attempt: 2, ExecutionToken: "tok", ExecutorID: "ex-1",
		Status: StatusCompleted, Output: map[string]any{"report": "xxx"}, CompletedAt: done, Duration: time.Second}

	got := r.TooLarge(5<<20, 4<<20)

	assert.Equal(t, StatusFailed, got.Status)
	assert.Nil(t, got.Output)
	require.NotNil(t, got.Error)
	assert.Equal(t, CodeOutputTooLarge, got.Error.Code)
	assert.False(t, got.Error.Retryable, "the same handler would produce the same output")
	assert.Contains(t, got.Error.Message, "COMPLETED result was 5242880 bytes")
	assert.Contains(t, got.Error.Message, "limit of 4194304")
	assert.Equal(t, r.Key(), got.Key())
	assert.Equal(t, "tok", got.ExecutionToken)
	assert.Equal(t, "ex-1", got.ExecutorID)
	assert.Equal(t, done, got.CompletedAt)
	assert.Equal(t, time.Second, got.Duration)
	assert.NotNil(t, r.Output, "the original is not modified")
}
