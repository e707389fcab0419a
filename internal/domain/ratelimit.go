package domain

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// RateLimit bounds how many tasks of one executor type start per second: a
// token bucket that refills at PerSecond tokens a second and holds at most
// Burst tokens. Each task admitted to run takes one token; tasks answered
// without running (invalid, no executor, a duplicate) take none.
type RateLimit struct {
	// PerSecond is the sustained rate, in tasks per second (> 0; a
	// fraction allows less than one task a second).
	PerSecond float64
	// Burst is how many tasks may start at once after a quiet spell (>= 1).
	// Zero means the default, max(1, ceil(PerSecond)): one second's worth.
	Burst int
}

// WithDefaults returns l with a zero Burst set to max(1, ceil(PerSecond)).
func (l RateLimit) WithDefaults() RateLimit {
	if l.Burst == 0 {
		l.Burst = DefaultBurst(l.PerSecond)
	}
	return l
}

// DefaultBurst is the burst of a rate limit that names none: one second's
// worth of tasks, at least one.
func DefaultBurst(perSecond float64) int {
	if perSecond >= math.MaxInt32 || math.IsNaN(perSecond) {
		return math.MaxInt32
	}
	return max(1, int(math.Ceil(perSecond)))
}

// Validate reports what is wrong with l, after defaults are applied.
func (l RateLimit) Validate() error {
	if !(l.PerSecond > 0) || math.IsInf(l.PerSecond, 0) {
		return fmt.Errorf("rate %v tasks per second is not a positive number", l.PerSecond)
	}
	if l.Burst < 1 {
		return fmt.Errorf("burst %d is below 1", l.Burst)
	}
	return nil
}

// String returns l as "50/s:10", the form the configuration takes.
func (l RateLimit) String() string {
	return fmt.Sprintf("%g/s:%d", l.PerSecond, l.Burst)
}

// RateLimitedError refuses a task because its executor type's rate limit
// has no token free now. It wraps ErrOverloaded, so that every transport
// maps it as it maps an overload (503, a pull source waits and offers
// again), and carries how long until a token is free.
type RateLimitedError struct {
	// Type is the executor type and Limit its rate limit.
	Type  string
	Limit RateLimit
	// RetryAfter is how long until a token is free (> 0).
	RetryAfter time.Duration
}

// ErrRateLimited is the sentinel of RateLimitedError: errors.Is(err,
// ErrRateLimited) finds any rate-limit refusal, and it wraps ErrOverloaded.
var ErrRateLimited = fmt.Errorf("%w: rate limited", ErrOverloaded)

// Error implements error, naming the type, its limit and the delay.
func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("executor type %s rate limited to %s: retry after %d ms",
		Quote(e.Type), e.Limit, RoundUpMillis(e.RetryAfter))
}

// Unwrap returns ErrRateLimited (which wraps ErrOverloaded).
func (e *RateLimitedError) Unwrap() error { return ErrRateLimited }

// RetryAfter returns the delay a rate-limit refusal in err's chain carries.
func RetryAfter(err error) (time.Duration, bool) {
	var e *RateLimitedError
	if errors.As(err, &e) {
		return e.RetryAfter, true
	}
	return 0, false
}

// RoundUpMillis returns d in whole milliseconds, rounded up.
func RoundUpMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// RetryAfterSeconds returns d in whole seconds, rounded up and at least 1:
// the value of an HTTP Retry-After header, which has no finer unit.
func RetryAfterSeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}
