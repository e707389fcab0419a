package ports

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestStopWithinGracefulInTime(t *testing.T) {
	var graceful, hard atomic.Bool
	StopWithin(time.Hour, func() { graceful.Store(true) }, func() { hard.Store(true) })
	assert.True(t, graceful.Load(), "graceful stop called")
	assert.False(t, hard.Load(), "hard stop called although the graceful one finished in time")
}

// TestStopWithinHardAfterTimeout checks that a graceful stop still running
// at the timeout is cut short by the hard one, and that StopWithin returns
// only once the graceful stop has.
func TestStopWithinHardAfterTimeout(t *testing.T) {
	release := make(chan struct{})
	var gracefulReturned, hardCalled atomic.Bool
	StopWithin(time.Millisecond,
		func() { <-release; gracefulReturned.Store(true) }, // a call in progress that never ends by itself
		func() { hardCalled.Store(true); close(release) })
	assert.True(t, hardCalled.Load(), "hard stop called")
	assert.True(t, gracefulReturned.Load(), "StopWithin returned before the graceful stop did")
}
