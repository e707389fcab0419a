package app

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Calls within one deadlineStep with the same timeout share a context;
// its deadline is the one asked for, rounded up by less than deadlineStep.
func TestDeadlinesShareAContextWithinAStep(t *testing.T) {
	var d deadlines
	defer d.release()
	start := time.Now()
	first := d.parent(context.Background(), time.Hour, start)
	deadline, ok := first.Deadline()
	require.True(t, ok)
	asked := start.Add(time.Hour)
	assert.False(t, deadline.Before(asked))
	assert.Less(t, deadline.Sub(asked), deadlineStep)

	assert.Same(t, first, d.parent(context.Background(), time.Hour, deadline.Add(-time.Hour)), "a call with the same rounded deadline got a context of its own")
	assert.NotSame(t, first, d.parent(context.Background(), time.Minute, start), "another timeout shares the context")
}

// A context is replaced, and stopped, once a call's deadline rounds to
// another step; one that ended (its deadline, its base) is never handed
// out.
func TestDeadlinesReplaceAndStopContexts(t *testing.T) {
	var d deadlines
	base, cancelBase := context.WithCancelCause(context.Background())
	start := time.Now()
	first := d.parent(base, time.Hour, start)
	second := d.parent(base, time.Hour, start.Add(2*deadlineStep))
	assert.NotSame(t, first, second)
	assert.Error(t, first.Err(), "the replaced context was not stopped: its timer runs on")
	assert.NoError(t, second.Err())

	stopped := errors.New("stopped")
	cancelBase(stopped)
	third := d.parent(base, time.Hour, start.Add(2*deadlineStep))
	assert.NotSame(t, second, third, "an ended context was handed out")
	assert.Same(t, stopped, context.Cause(third))

	d.release()
	assert.Error(t, third.Err())
}

// At the deadline the context ends with the cause causeOf makes.
func TestDeadlinesEndWithTheirCause(t *testing.T) {
	timedOut := errors.New("timed out")
	d := deadlines{causeOf: func(time.Duration) error { return timedOut }}
	defer d.release()
	ctx := d.parent(context.Background(), time.Millisecond, time.Now())
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the context did not end at its deadline")
	}
	assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
	assert.Same(t, timedOut, context.Cause(ctx))
}
