package app_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// slowLimit refills one token in 100 s: no token comes back during a test,
// so every count below is exact.
var slowLimit = &domain.RateLimit{PerSecond: 0.01, Burst: 3}

// limited returns a completing executor of type typ with the slow limit.
func limited(typ string) funcExecutor {
	ex := completing(typ, 10)
	ex.desc.RateLimit = slowLimit
	return ex
}

// A rate-limited type admits its burst, then refuses with a
// RateLimitedError that is an overload (every adapter's 503), carries the
// wait until the next token, and is counted as "rate_limited".
func TestRateLimitRefusesBeyondTheBurstWithTheWait(t *testing.T) {
	obs := &recordingObserver{finished: map[string]int{}, refused: map[string]int{}}
	cfg := testConfig()
	cfg.Observer = obs
	h := newHarness(t, cfg, on("t", limited("pay")))
	h.run(t)
	src := h.sources["t"]
	for _, n := range []string{"a", "b", "c"} {
		src.mustOffer(t, task("run", n, 1))
	}
	_, err := src.offer(t, task("run", "d", 1), false)
	require.Error(t, err)
	assert.True(t, errors.Is(err, domain.ErrRateLimited))
	assert.True(t, errors.Is(err, domain.ErrOverloaded), "a rate-limit refusal must map as an overload")
	wait, ok := domain.RetryAfter(err)
	require.True(t, ok)
	assert.InDelta(t, (100 * time.Second).Seconds(), wait.Seconds(), 5, "one token in 100 s")
	assert.Contains(t, err.Error(), `"pay"`)
	assert.Contains(t, err.Error(), "retry after")
	obs.mu.Lock()
	assert.Equal(t, 1, obs.refused["t/rate_limited"])
	obs.mu.Unlock()
	h.sinks["t"].waitResults(t, 3)
}

// Duplicates, joined to the task in flight or answered with its stored
// result, and tasks answered at intake (no executor) take no token.
func TestRateLimitChargesOnlyTasksThatRun(t *testing.T) {
	gate := make(chan struct{})
	var running, peak int64
	var mu sync.Mutex
	ex := gated("pay", 10, gate, &running, &peak, &mu)
	ex.desc.RateLimit = slowLimit
	h := newHarness(t, testConfig(), on("t", ex))
	h.run(t)
	src := h.sources["t"]

	first := src.mustOffer(t, task("run", "a", 1))  // token 1
	joined := src.mustOffer(t, task("run", "a", 1)) // joined: no token
	noExec := task("run", "x", 1)
	noExec.ExecutorType = "not-hosted"
	src.mustOffer(t, noExec) // answered NO_EXECUTOR: no token
	close(gate)
	require.NoError(t, first.wait(t))
	require.NoError(t, joined.wait(t))
	h.sinks["t"].waitResults(t, 2)

	src.mustOffer(t, task("run", "a", 1)) // answered with its stored result: no token
	src.mustOffer(t, task("run", "b", 1)) // token 2
	src.mustOffer(t, task("run", "c", 1)) // token 3
	_, err := src.offer(t, task("run", "d", 1), false)
	assert.True(t, errors.Is(err, domain.ErrRateLimited), "the burst is 3 tasks run, got %v", err)
}

// A type without a rate limit is not limited.
func TestNoRateLimitAdmitsEverything(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, on("t", completing("free", 10)), on("t", limited("pay")))
	h.run(t)
	for i := range 10 {
		task := task("run", "n"+string(rune('a'+i)), 1)
		task.ExecutorType = "free"
		h.sources["t"].mustOffer(t, task)
	}
	h.sinks["t"].waitResults(t, 10)
}
