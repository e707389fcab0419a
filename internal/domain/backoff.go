package domain

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff computes exponential retry delays with proportional jitter. The
// zero value is not useful; see DefaultBackoff.
type Backoff struct {
	// Initial is the delay before the first retry.
	Initial time.Duration
	// Max caps every delay; zero leaves delays uncapped, in which case they
	// saturate at the longest time.Duration instead of overflowing.
	Max time.Duration
	// Multiplier grows the delay after each retry (2 doubles it).
	Multiplier float64
	// Jitter spreads each delay uniformly by up to this fraction either way
	// (0.2 means +-20%), so that many clients do not retry in step.
	Jitter float64
}

// DefaultBackoff starts at 100ms, doubles, caps at 10s and jitters by 20%.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2}

// Delay returns the delay before retry number retry (0 for the first retry).
func (b Backoff) Delay(retry int) time.Duration {
	mult := b.Multiplier
	if mult < 1 {
		mult = 1
	}
	d := float64(b.Initial) * math.Pow(mult, float64(retry))
	if b.Max > 0 && d > float64(b.Max) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		d *= 1 + b.Jitter*(2*rand.Float64()-1)
	}
	if b.Max > 0 && d > float64(b.Max) {
		d = float64(b.Max)
	}
	if d < 0 { // a Jitter above 1 must not produce a negative delay
		d = 0
	}
	// Converting a float64 beyond the range of int64 yields an
	// implementation-dependent value (a negative one on amd64), which would
	// turn an uncapped backoff into a busy loop.
	if d >= maxDelayNanos {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(d)
}

// maxDelayNanos is the smallest float64 that no longer fits a time.Duration.
const maxDelayNanos = float64(math.MaxInt64)

// Wait sleeps for Delay(retry), returning early with ctx's cause when ctx ends.
func (b Backoff) Wait(ctx context.Context, retry int) error { return Sleep(ctx, b.Delay(retry)) }

// Sleep waits for d, returning early with ctx's cause when ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
