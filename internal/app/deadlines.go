package app

import (
	"context"
	"time"
)

// deadlines makes contexts that end at a deadline, for one goroutine that
// needs one after another: a worker, for its handlers, and a result sender,
// for its calls to the sink. Each context is shared by the calls made
// within one deadlineStep of each other with the same timeout, and each
// caller makes a cancellable child of it for itself. A context with a
// deadline of its own per call would cost a runtime timer set and stopped,
// and three allocations more, every time, while a worker of quick handlers
// starts several tasks per millisecond. The deadline a caller sees is the
// one it asked for, rounded up to the next deadlineStep.
//
// A context is stopped when the next one replaces it: by then, no child of
// it is in use (the goroutine uses one at a time, and has cancelled its
// child), except a child that ended already (a handler abandoned after its
// context ended).
type deadlines struct {
	// causeOf makes the cause of a context that reaches the deadline of
	// timeout; nil leaves it context.DeadlineExceeded.
	causeOf func(timeout time.Duration) error

	ctx      context.Context
	stop     context.CancelFunc
	deadline time.Time
	timeout  time.Duration
	// epoch is what deadlines are rounded from: a reading of the monotonic
	// clock, so that rounding keeps deadlines on it.
	epoch time.Time
}

// deadlineStep is how much later than asked a deadline may be.
const deadlineStep = time.Millisecond

// parent returns a context that ends at start+timeout, rounded up to the
// next deadlineStep, or when base ends. base must be the same on every call.
func (d *deadlines) parent(base context.Context, timeout time.Duration, start time.Time) context.Context {
	if d.epoch.IsZero() {
		d.epoch = start
	}
	deadline := start.Add(timeout)
	if over := deadline.Sub(d.epoch) % deadlineStep; over > 0 {
		deadline = deadline.Add(deadlineStep - over)
	}
	if d.ctx != nil && d.timeout == timeout && d.deadline.Equal(deadline) && d.ctx.Err() == nil {
		return d.ctx
	}
	d.release()
	var cause error
	if d.causeOf != nil {
		cause = d.causeOf(timeout)
	}
	d.ctx, d.stop = context.WithDeadlineCause(base, deadline, cause)
	d.deadline, d.timeout = deadline, timeout
	return d.ctx
}

// release stops the last context made, if any.
func (d *deadlines) release() {
	if d.stop != nil {
		d.stop()
		d.ctx, d.stop = nil, nil
	}
}
