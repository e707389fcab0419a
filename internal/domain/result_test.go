package domain

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

func TestMinimalKeepsOnlyTheIdentity(t *testing.T) {
	trace := TraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", InContext: true}
	r := Result{TaskID: "t1", RunID: "run-1", NodeID: "n1", Attempt: 2, ExecutionToken: "tok", ExecutorID: "ex-1",
		Status: StatusFailed, Output: map[string]any{"x": 1}, Trace: &trace,
		Error: &ErrorInfo{Code: "BIG", Message: "m", StackTrace: "stack", Context: map[string]any{"k": "v"}, Retryable: true}}

	got := r.Minimal(CodeResultRejected, strings.Repeat("m", 3*MaxErrorMessageBytes))

	assert.Equal(t, Result{TaskID: "t1", RunID: "run-1", NodeID: "n1", Attempt: 2, ExecutionToken: "tok", ExecutorID: "ex-1",
		Status: StatusFailed, Error: got.Error, Trace: &trace}, got, "the trace context goes back with the answer that replaces a result")
	assert.Equal(t, CodeResultRejected, got.Error.Code)
	assert.LessOrEqual(t, len(got.Error.Message), MaxErrorMessageBytes+32, "the message is bounded")
	assert.Empty(t, got.Error.StackTrace)
	assert.Nil(t, got.Error.Context)
}

func TestBoundedClipsMessageAndStackWithoutChangingTheOriginal(t *testing.T) {
	original := &ErrorInfo{Code: "X", Message: strings.Repeat("é", MaxErrorMessageBytes), StackTrace: strings.Repeat("s", 2*MaxStackTraceBytes)}
	r := Result{Status: StatusFailed, Error: original}

	got := r.Bounded()

	assert.LessOrEqual(t, len(got.Error.Message), MaxErrorMessageBytes+32)
	assert.True(t, utf8.ValidString(got.Error.Message), "cut at a character boundary")
	assert.Contains(t, got.Error.Message, "more bytes)")
	assert.LessOrEqual(t, len(got.Error.StackTrace), MaxStackTraceBytes+32)
	assert.Len(t, original.Message, 2*MaxErrorMessageBytes, "the original is not modified")

	small := Result{Status: StatusFailed, Error: &ErrorInfo{Code: "X", Message: "short"}}
	assert.Same(t, small.Error, small.Bounded().Error, "nothing copied when nothing is clipped")
}

func TestClip(t *testing.T) {
	assert.Equal(t, "abc", Clip("abc", 3))
	assert.Equal(t, "ab…(1 more bytes)", Clip("abc", 2))
	assert.Equal(t, "…(2 more bytes)", Clip("é", 1), "never half a character")
	assert.Equal(t, `"aaaa`, Quote(strings.Repeat("a", 1000))[:5])
	assert.Less(t, len(Quote(strings.Repeat("a", 1<<20))), 100)
}
