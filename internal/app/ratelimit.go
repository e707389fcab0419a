package app

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/gamelan-go/executor/internal/domain"
)

// rateGate enforces one executor type's rate limit at admission: every task
// admitted to run takes a token from a token bucket (golang.org/x/time/rate);
// a task that finds none is refused with domain.RateLimitedError, which
// carries the wait until a token is free. A type without a rate limit has a
// nil gate and pays nothing beyond a nil check.
type rateGate struct {
	typ     string
	limit   domain.RateLimit
	limiter *rate.Limiter
	// admitted counts the tokens kept since the last heartbeat, and
	// since the unix-nano time it started counting: the heartbeat's load
	// compares them with what the limit allows over that time.
	admitted atomic.Int64
	since    atomic.Int64
}

// newRateGate returns the gate of a type's rate limit, nil when it has none.
func newRateGate(typ string, l *domain.RateLimit) *rateGate {
	if l == nil {
		return nil
	}
	limit := l.WithDefaults()
	g := &rateGate{typ: typ, limit: limit, limiter: rate.NewLimiter(rate.Limit(limit.PerSecond), limit.Burst)}
	g.since.Store(time.Now().UnixNano())
	return g
}

// take reserves a token at now for one task. It returns the reservation,
// which the caller keeps (kept) or cancels at the same now (giveBack) once
// it knows whether the task runs; or, when no token is free at now, a
// *domain.RateLimitedError and no reservation (nothing is taken).
func (g *rateGate) take(now time.Time) (*rate.Reservation, error) {
	res := g.limiter.ReserveN(now, 1)
	// ReserveN fails only for n > burst, which Validate rules out; such a
	// reservation has no delay to report, so it is refused for a second.
	if !res.OK() {
		return nil, &domain.RateLimitedError{Type: g.typ, Limit: g.limit, RetryAfter: time.Second}
	}
	if delay := res.DelayFrom(now); delay > 0 {
		// Waiting for the token would hold the source's call: refuse now
		// and give the future token back, so that the refused task does
		// not push back the tasks that come after it.
		res.CancelAt(now)
		return nil, &domain.RateLimitedError{Type: g.typ, Limit: g.limit, RetryAfter: delay}
	}
	return res, nil
}

// kept records that the task whose token was taken was admitted to run.
func (g *rateGate) kept() { g.admitted.Add(1) }

// giveBack returns the token of a task that will not run (a duplicate
// joined or answered, a task refused for room). It must be given the now
// the token was taken at: x/time/rate restores nothing for a reservation
// cancelled after its time to act, which for a free token is that now.
func (g *rateGate) giveBack(res *rate.Reservation, now time.Time) { res.CancelAt(now) }

// load returns the share of the rate limit used since the last call, from
// 0 to 1, and starts counting again. It is called by the heartbeat, once
// per interval per type.
func (g *rateGate) load(now time.Time) float64 {
	start := time.Unix(0, g.since.Swap(now.UnixNano()))
	admitted := g.admitted.Swap(0)
	elapsed := now.Sub(start).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return clamp01(float64(admitted) / (g.limit.PerSecond * elapsed))
}

// clamp01 returns x within [0, 1].
func clamp01(x float64) float64 { return min(1, max(0, x)) }

// heartbeatLoad is e's load for its heartbeat: the larger of its slots in
// use, against its running limit (below MaxConcurrentTasks while adaptive
// concurrency holds it lower), and the share of its rate limit used since
// its last heartbeat.
func (r *Runtime) heartbeatLoad(e *hostedExecutor, now time.Time) float64 {
	inUse, limit, _, _ := r.sched.laneLoad(e.lane)
	load := clamp01(float64(inUse) / float64(limit))
	if e.rate != nil {
		load = max(load, e.rate.load(now))
	}
	return load
}
