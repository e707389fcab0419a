package ports

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestStopWithinGracefulInTime(t *testing.T) {
	var graceful, hard atomic.Bool
	err := StopWithin(context.Background(), func() { graceful.Store(true) }, func() { hard.Store(true) })
	assert.NoError(t, err)
	assert.True(t, graceful.Load(), "graceful stop called")
	assert.False(t, hard.Load(), "hard stop called although the graceful one finished in time")
}

// TestStopWithinHardWhenCtxEnds checks that a graceful stop still running
// when ctx ends is cut short by the hard one, that StopWithin returns only
// once the graceful stop has, and that it says the stop was hard.
func TestStopWithinHardWhenCtxEnds(t *testing.T) {
	release := make(chan struct{})
	var gracefulReturned, hardCalled atomic.Bool
	ctx, cancel := context.WithCancelCause(context.Background())
	deadline := errors.New("close deadline passed")
	cancel(deadline)
	err := StopWithin(ctx,
		func() { <-release; gracefulReturned.Store(true) }, // a call in progress that never ends by itself
		func() { hardCalled.Store(true); close(release) })
	assert.ErrorIs(t, err, deadline)
	assert.True(t, hardCalled.Load(), "hard stop called")
	assert.True(t, gracefulReturned.Load(), "StopWithin returned before the graceful stop did")
}
