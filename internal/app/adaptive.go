package app

import (
	"log/slog"
	"sync/atomic"
	"time"
)

// adaptiveLimit is the controller of one executor type's adaptive
// concurrency (Descriptor.AdaptiveConcurrency): it moves the type's running
// limit between 1 and its MaxConcurrentTasks as its handlers' latency and
// retryable failures change. Its methods other than logChange run under the
// scheduler's lock, which the worker already holds when it releases a
// finished job: recording a sample costs no lock of its own.
//
// The rule is additive increase, multiplicative decrease, steered by
// latency (a delay-based AIMD, as TCP Vegas and Netflix's concurrency-limits
// use). Samples are gathered in windows of max(limit, 10) samples, or fewer
// once 100 ms have passed; at the end of each window, with
//
//	latency = the window's mean handler duration
//	min     = the lowest window latency seen in the last one or two epochs
//	ratio   = latency / min
//	errors  = retryable failures / samples in the window
//
// the limit becomes
//
//	max(1, floor(limit × 0.8))  if errors > 10% or ratio > 1.5 (shrink)
//	min(max, limit + 1)          if ratio ≤ 1.2 and the lane used its limit (grow)
//	limit                        otherwise (hold)
//
// The band between 1.2 and 1.5 keeps the limit still where latency has
// started to climb but is not yet bad, so that it settles rather than
// swinging between growth and cuts. A lane that did not fill its limit
// during the window learns nothing about a higher one, so an idle limit
// does not grow. The minimum is forgotten an epoch (minEpoch) after it was
// last seen, so that a downstream that became slower for good does not
// hold the limit at 1: the minimum rises to its new latency, and growth
// resumes.
type adaptiveLimit struct {
	max   int // MaxConcurrentTasks
	limit int // the running limit, between 1 and max

	// The window being gathered: its samples, the sum of their durations,
	// how many were retryable failures, the most slots in use at a
	// release, and when it started (see monotonicNow).
	samples, failures int
	sum               int64
	peakInUse         int
	windowStart       int64

	// minCurrent and minPrevious are the lowest window latencies of the
	// current epoch and of the one before (0: none yet); epochStart is when
	// the current epoch began.
	minCurrent, minPrevious int64
	epochStart              int64

	// changed holds the limit to log, plus one (0: nothing to log), set
	// under the scheduler's lock and logged outside it by logChange;
	// lastLogged throttles the log to one line per logEvery.
	changed    atomic.Int64
	lastLogged int64
	log        *slog.Logger
	typ        string // the executor type, for the log
}

// Tuning of the rule above.
const (
	minWindowSamples = 10
	windowSpan       = int64(100 * time.Millisecond)
	minEpoch         = int64(10 * time.Second)
	growBelow        = 1.2 // ratio at or below which the limit may grow
	shrinkAbove      = 1.5 // ratio above which it shrinks
	shrinkFactor     = 0.8
	maxErrorRate     = 0.1
	logEvery         = int64(time.Second)
)

// sample is what a finished handler tells its type's controller: how long
// it ran, whether it failed retryably, and when it ended (see
// monotonicNow). ok is false when there is nothing to tell (a cancelled
// task, a job that ran no handler, a lane whose limit is fixed).
type sample struct {
	duration time.Duration
	at       int64
	failed   bool
	ok       bool
}

// newAdaptiveLimit returns a controller for a type allowed max concurrent
// tasks, starting at min(max, 10): low enough not to flood a downstream
// nobody has measured yet, high enough that a fast one is reached soon.
// log, when not nil, gets a debug line for changes of the limit of typ.
func newAdaptiveLimit(typ string, max int, log *slog.Logger, now int64) *adaptiveLimit {
	return &adaptiveLimit{max: max, limit: min(max, 10), windowStart: now, epochStart: now,
		lastLogged: now - logEvery, log: log, typ: typ}
}

// observe records s, taken when inUse slots of the lane were held (the
// released one included), and at the end of a window applies the rule. It
// returns the limit, changed or not.
func (a *adaptiveLimit) observe(s sample, inUse int, now int64) int {
	a.samples++
	a.sum += int64(s.duration)
	if s.failed {
		a.failures++
	}
	a.peakInUse = max(a.peakInUse, inUse)
	if a.samples < max(a.limit, minWindowSamples) && now-a.windowStart < windowSpan {
		return a.limit
	}
	a.endWindow(now)
	return a.limit
}

// endWindow applies the rule to the window gathered and starts another.
func (a *adaptiveLimit) endWindow(now int64) {
	latency := a.sum / int64(a.samples)
	floor := a.minLatency(latency, now)
	ratio := float64(latency) / float64(max(floor, 1))
	old := a.limit
	switch {
	case float64(a.failures) > maxErrorRate*float64(a.samples) || ratio > shrinkAbove:
		a.limit = max(1, int(float64(a.limit)*shrinkFactor))
	case ratio <= growBelow && a.peakInUse >= a.limit:
		a.limit = min(a.max, a.limit+1)
	}
	a.samples, a.failures, a.sum, a.peakInUse, a.windowStart = 0, 0, 0, 0, now
	if a.limit != old && now-a.lastLogged >= logEvery {
		a.lastLogged = now
		a.changed.Store(int64(a.limit) + 1)
	}
}

// minLatency adds latency to the current epoch's minimum, starting a new
// epoch when the current one is minEpoch old, and returns the lowest
// latency of the current and previous epochs: a minimum is so forgotten
// between one and two epochs after it was last seen.
func (a *adaptiveLimit) minLatency(latency, now int64) int64 {
	if now-a.epochStart >= minEpoch {
		a.minPrevious, a.minCurrent, a.epochStart = a.minCurrent, 0, now
	}
	if a.minCurrent == 0 || latency < a.minCurrent {
		a.minCurrent = latency
	}
	if a.minPrevious != 0 && a.minPrevious < a.minCurrent {
		return a.minPrevious
	}
	return a.minCurrent
}

// logChange logs the last limit change not yet logged, at debug level. It
// runs outside the scheduler's lock, so that writing a log line never holds
// up the workers; endWindow throttles what it finds.
func (a *adaptiveLimit) logChange() {
	if a == nil || a.log == nil {
		return
	}
	if limit := a.changed.Swap(0); limit != 0 {
		a.log.Debug("adaptive concurrency limit changed", slog.String("executor_type", a.typ),
			slog.Int64("limit", limit-1), slog.Int("max_concurrent_tasks", a.max))
	}
}
