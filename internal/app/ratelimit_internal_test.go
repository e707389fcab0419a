package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// A token given back at the time it was taken is free again, and a refusal
// takes nothing: the next token comes 1/rate after the last one kept.
func TestRateGateGiveBackRestoresTheToken(t *testing.T) {
	g := newRateGate("pay", &domain.RateLimit{PerSecond: 50, Burst: 1})
	now := time.Now()
	res, err := g.take(now)
	require.NoError(t, err)
	g.giveBack(res, now)
	res, err = g.take(now)
	require.NoError(t, err, "the token given back is free again")
	g.kept()
	_ = res

	for range 3 { // refusals do not push the next token back
		_, err = g.take(now)
		wait, ok := domain.RetryAfter(err)
		require.True(t, ok, "want a rate-limit refusal, got %v", err)
		assert.InDelta(t, 20*time.Millisecond, wait, float64(time.Millisecond), "one token every 20 ms")
	}
	_, err = g.take(now.Add(20 * time.Millisecond))
	assert.NoError(t, err, "a token is free 1/rate later")
}

// No rate limit, no gate: the hot path checks nil only.
func TestNoRateLimitNoGate(t *testing.T) {
	assert.Nil(t, newRateGate("free", nil))
}

// The load reports the share of the rate used since the last call.
func TestRateGateLoad(t *testing.T) {
	g := newRateGate("pay", &domain.RateLimit{PerSecond: 10, Burst: 10})
	start := time.Unix(0, g.since.Load())
	for range 5 {
		g.kept()
	}
	assert.InDelta(t, 0.5, g.load(start.Add(time.Second)), 0.01, "5 tasks in 1 s of a 10/s limit")
	assert.InDelta(t, 0, g.load(start.Add(2*time.Second)), 0.01, "none since")
	for range 50 {
		g.kept()
	}
	assert.Equal(t, 1.0, g.load(start.Add(3*time.Second)), "clamped to 1")
}

// The heartbeat's load is the larger of the slots in use, against the
// running limit, and the share of the rate limit used.
func TestHeartbeatLoadIsTheLargerShare(t *testing.T) {
	r := &Runtime{sched: newScheduler(100)}
	e := &hostedExecutor{desc: domain.Descriptor{MaxConcurrentTasks: 4}, lane: r.sched.newLane(4)}
	e.lane.running = 1
	assert.InDelta(t, 0.25, r.heartbeatLoad(e, time.Now()), 1e-9, "no rate limit: slots only")
	e.lane.max = 2 // adaptive concurrency holds the limit at 2 of 4
	assert.InDelta(t, 0.5, r.heartbeatLoad(e, time.Now()), 1e-9, "slots against the running limit")
	e.lane.max = 4

	e.rate = newRateGate("pay", &domain.RateLimit{PerSecond: 10, Burst: 10})
	start := time.Unix(0, e.rate.since.Load())
	for range 8 {
		e.rate.kept()
	}
	assert.InDelta(t, 0.8, r.heartbeatLoad(e, start.Add(time.Second)), 0.01, "8 of 10 tasks a second beats 1 of 4 slots")
	e.lane.running = 4
	assert.Equal(t, 1.0, r.heartbeatLoad(e, start.Add(2*time.Second)), "every slot in use")
}
