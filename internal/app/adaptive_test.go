package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// ruleClock feeds an adaptiveLimit samples on a clock of its own, so that
// the rule's tests decide exactly when windows and epochs end.
type ruleClock struct {
	a   *adaptiveLimit
	now int64
}

func newRule(max int) *ruleClock {
	return &ruleClock{a: newAdaptiveLimit("t", max, nil, 0)}
}

// window feeds one whole window of samples of latency d, taken with inUse
// slots held, every failedEvery-th a retryable failure (0: none), a
// millisecond apart; it returns the limit after the window.
func (c *ruleClock) window(d time.Duration, inUse, failedEvery int) int {
	n := max(c.a.limit, minWindowSamples)
	limit := 0
	for i := 1; i <= n; i++ {
		c.now += int64(time.Millisecond)
		limit = c.a.observe(sample{duration: d, at: c.now, ok: true, failed: failedEvery > 0 && i%failedEvery == 0}, inUse, c.now)
	}
	return limit
}

// full feeds a window taken with the lane using its whole limit.
func (c *ruleClock) full(d time.Duration) int { return c.window(d, c.a.limit, 0) }

func TestAdaptiveLimitStartsAtTenOrMax(t *testing.T) {
	assert.Equal(t, 10, newRule(100).a.limit)
	assert.Equal(t, 4, newRule(4).a.limit)
}

func TestAdaptiveLimitGrowsByOnePerWindowWhileLatencyStaysAtItsMinimum(t *testing.T) {
	c := newRule(100)
	for want := 11; want <= 20; want++ {
		require.Equal(t, want, c.full(20*time.Millisecond))
	}
	// Within 1.2 times the minimum is still near it.
	assert.Equal(t, 21, c.full(24*time.Millisecond))
}

func TestAdaptiveLimitNeverExceedsMax(t *testing.T) {
	c := newRule(12)
	for range 10 {
		c.full(20 * time.Millisecond)
	}
	assert.Equal(t, 12, c.a.limit)
}

func TestAdaptiveLimitDoesNotGrowWhenTheLaneDoesNotUseIt(t *testing.T) {
	c := newRule(100)
	for range 5 {
		require.Equal(t, 10, c.window(20*time.Millisecond, 9, 0), "a lane that never filled its limit learns nothing of a higher one")
	}
	assert.Equal(t, 11, c.full(20*time.Millisecond))
}

func TestAdaptiveLimitHoldsBetweenTheThresholds(t *testing.T) {
	c := newRule(100)
	c.full(20 * time.Millisecond) // minimum 20 ms; limit 11
	for range 5 {
		require.Equal(t, 11, c.full(28*time.Millisecond), "1.4 times the minimum: neither near it nor above the tolerance")
	}
}

func TestAdaptiveLimitShrinksMultiplicativelyWhenLatencyRises(t *testing.T) {
	c := newRule(100)
	for range 30 {
		c.full(20 * time.Millisecond)
	}
	require.Equal(t, 40, c.a.limit)
	assert.Equal(t, 32, c.full(31*time.Millisecond), "above 1.5 times the minimum: limit × 0.8")
	assert.Equal(t, 25, c.full(31*time.Millisecond))
	for range 20 {
		c.full(time.Second)
	}
	assert.Equal(t, 1, c.a.limit, "never below 1")
}

func TestAdaptiveLimitShrinksWhenRetryableFailuresExceedTenPercent(t *testing.T) {
	c := newRule(100)
	c.full(20 * time.Millisecond) // limit 11: windows of 11 samples
	assert.Equal(t, 12, c.window(20*time.Millisecond, 11, 11), "1 failure in 11 (9%) is tolerated")
	assert.Equal(t, 9, c.window(20*time.Millisecond, 12, 5), "2 in 12 (17%) shrink it")
}

func TestAdaptiveLimitWindowEndsAfter100msWithFewerSamples(t *testing.T) {
	c := newRule(100)
	c.a.observe(sample{duration: time.Millisecond, ok: true}, 10, int64(50*time.Millisecond))
	require.Equal(t, 1, c.a.samples, "the window is still open")
	limit := c.a.observe(sample{duration: time.Millisecond, ok: true}, 10, int64(100*time.Millisecond))
	assert.Equal(t, 11, limit)
	assert.Zero(t, c.a.samples, "a new window started")
}

// A downstream that became three times slower for good cuts the limit to
// 1; once the old minimum is forgotten (one to two epochs later), the new
// latency is the minimum and the limit grows again.
func TestAdaptiveLimitForgetsAnOldMinimumSoASlowerDownstreamDoesNotPinItAtOne(t *testing.T) {
	c := newRule(100)
	c.full(20 * time.Millisecond)
	for range 20 {
		c.full(60 * time.Millisecond)
	}
	require.Equal(t, 1, c.a.limit)
	for c.now < 3*minEpoch && c.a.limit == 1 {
		c.full(60 * time.Millisecond)
	}
	assert.Greater(t, c.a.limit, 1, "the limit grows again once the 20 ms minimum is forgotten")
	assert.LessOrEqual(t, c.now, 2*minEpoch+int64(time.Second))
}

func TestAdaptiveLimitLogsChangesAtMostOncePerSecond(t *testing.T) {
	c := newRule(100)
	c.full(20 * time.Millisecond)
	assert.Equal(t, int64(12), c.a.changed.Swap(0), "the first change is logged: 11, stored plus one")
	c.full(20 * time.Millisecond)
	assert.Zero(t, c.a.changed.Load(), "a change within a second of the last logged one is not")
}

// The scheduler applies the controller's limit: a lower one stops no
// running job, only fewer start; a higher one lets a waiting job start.
func TestAdaptiveLaneLimitMovesWithoutPreemptingAndWakesWhenRaised(t *testing.T) {
	s := newScheduler(100)
	l := s.newLane(4)
	a := newAdaptiveLimit("t", 4, nil, 0)
	a.limit = 2
	s.adapt(l, a)
	jobs := make([]*job, 4)
	for i := range jobs {
		jobs[i] = &job{lane: l}
		require.True(t, s.admit(jobs[i]))
	}
	first, second := s.next(nil, sample{}), s.next(nil, sample{})
	require.NotNil(t, first)
	require.NotNil(t, second)
	s.mu.Lock()
	assert.False(t, s.startable(), "the lane is at its limit of 2")
	s.mu.Unlock()

	// A window of slow samples cuts the limit to 1 (2 × 0.8); both jobs
	// run on, and the one released starts no other.
	a.minCurrent = int64(time.Millisecond)
	a.samples = minWindowSamples - 1
	a.sum = int64(minWindowSamples-1) * int64(time.Second)
	s.release(first, false, sample{duration: time.Second, ok: true, at: 1})
	inUse, limit, queued, _ := s.laneLoad(l)
	assert.Equal(t, []int{1, 1, 2}, []int{inUse, limit, queued})
	s.mu.Lock()
	assert.False(t, s.startable(), "one runs, at the limit of 1")
	s.mu.Unlock()

	// Fast samples from a full lane raise it to 2: a job may start again.
	a.samples, a.sum, a.minCurrent, a.minPrevious = minWindowSamples-1, 0, int64(time.Second), 0
	s.release(second, false, sample{duration: time.Millisecond, ok: true, at: 2})
	_, limit, _, _ = s.laneLoad(l)
	assert.Equal(t, 2, limit)
	s.mu.Lock()
	assert.True(t, s.startable())
	s.mu.Unlock()
}

// What a finished handler tells its lane's controller.
func TestSampleOf(t *testing.T) {
	adaptive := &job{lane: &lane{adaptive: newAdaptiveLimit("t", 4, nil, 0)}}
	fixed := &job{lane: &lane{}}
	ok := domain.Result{Status: domain.StatusCompleted, Duration: time.Second}
	retryable := domain.Result{Status: domain.StatusFailed, Duration: time.Second, Error: &domain.ErrorInfo{Retryable: true}}
	final := domain.Result{Status: domain.StatusFailed, Duration: time.Second, Error: &domain.ErrorInfo{}}
	cancelled := domain.Result{Status: domain.StatusCancelled, Duration: time.Second}

	assert.False(t, sampleOf(fixed, ok, false).ok, "a fixed limit takes no samples")
	assert.False(t, sampleOf(&job{}, ok, false).ok, "nor does the immediate lane")
	s := sampleOf(adaptive, ok, false)
	assert.True(t, s.ok)
	assert.False(t, s.failed)
	assert.Equal(t, time.Second, s.duration)
	assert.True(t, sampleOf(adaptive, retryable, false).failed)
	assert.False(t, sampleOf(adaptive, final, false).failed, "a failure that retrying cannot mend says nothing of load")
	assert.False(t, sampleOf(adaptive, cancelled, false).ok, "the engine's cancel says nothing of the downstream")
	abandoned := sampleOf(adaptive, cancelled, true)
	assert.True(t, abandoned.ok && abandoned.failed, "a handler abandoned at its deadline is a slow failure")
}
