package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// The measurement of issue 18's adaptive concurrency: a simulated
// downstream whose latency climbs steeply above 20 concurrent calls, served
// by a type allowed 100, under an offered load that keeps more than 100
// tasks waiting. With adaptive concurrency the limit settles near 20 and
// the p99 stays below twice the unloaded latency; without it, the p99 is
// far above (the control, which shows the measurement can fail).

const (
	downstreamKnee = 20                    // concurrent calls the downstream serves at its base latency
	downstreamBase = 50 * time.Millisecond // its latency up to the knee
)

// downstream is the simulated service: each call takes downstreamBase,
// jittered by ±5%, while at most downstreamKnee calls are in progress
// (this one included), and base × (1 + (n-20)/4) with n in progress above.
type downstream struct {
	mu             sync.Mutex
	inFlight, peak int
}

func (d *downstream) call(ctx context.Context) error {
	d.mu.Lock()
	d.inFlight++
	n := d.inFlight
	d.peak = max(d.peak, n)
	d.mu.Unlock()
	defer func() { d.mu.Lock(); d.inFlight--; d.mu.Unlock() }()
	latency := float64(downstreamBase) * (0.95 + 0.1*rand.Float64())
	if n > downstreamKnee {
		latency *= 1 + float64(n-downstreamKnee)/4
	}
	// The simulated downstream's latency itself: nothing is awaited here.
	timer := time.NewTimer(time.Duration(latency))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// latencyLog records when each handler ended and how long it took.
type latencyLog struct {
	mu    sync.Mutex
	ended []time.Time
	took  []time.Duration
}

func (l *latencyLog) add(end time.Time, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ended = append(l.ended, end)
	l.took = append(l.took, took)
}

// since returns the durations of the handlers that ended at or after from.
func (l *latencyLog) since(from time.Time) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var took []time.Duration
	for i, end := range l.ended {
		if !end.Before(from) {
			took = append(took, l.took[i])
		}
	}
	return took
}

// percentile returns the p-th percentile (0-100) of values, nearest rank.
func percentile[T int | time.Duration](values []T, p float64) T {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	rank := max(0, int(float64(len(sorted))*p/100+0.5)-1)
	return sorted[min(rank, len(sorted)-1)]
}

// adaptiveRun is what one run under saturation measured over its last half.
type adaptiveRun struct {
	run         time.Duration // how long the load was offered
	handled     int           // handlers ended in the last half
	p50, p99    time.Duration // their latency
	p90, worst  time.Duration
	limitMedian int   // the type's limit, sampled every 10 ms
	limits      []int // those samples
	peak        int   // the most calls the downstream had in progress at once
}

// adaptiveSeconds is how long the adaptive run offers load: ADAPTIVE_SECONDS,
// else 8 (make test-flow sets 30).
func adaptiveSeconds(t *testing.T) time.Duration {
	v := os.Getenv("ADAPTIVE_SECONDS")
	if v == "" {
		return 8 * time.Second
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, "ADAPTIVE_SECONDS")
	require.Positive(t, n, "ADAPTIVE_SECONDS")
	return time.Duration(n) * time.Second
}

// unloadedLatency is the downstream's median latency, one call at a time.
func unloadedLatency(t *testing.T) time.Duration {
	d := &downstream{}
	took := make([]time.Duration, 25)
	for i := range took {
		start := time.Now()
		require.NoError(t, d.call(context.Background()))
		took[i] = time.Since(start)
	}
	return percentile(took, 50)
}

// saturate serves the downstream through a runtime whose one type allows
// 100 concurrent tasks, adaptive or not, offering tasks as fast as the
// runtime takes them for run, and measures the last half.
func saturate(t *testing.T, adaptive bool, run time.Duration) adaptiveRun {
	const typ = "downstream"
	d := &downstream{}
	log := &latencyLog{}
	ex := funcExecutor{
		desc: domain.Descriptor{Type: typ, MaxConcurrentTasks: 100, AdaptiveConcurrency: adaptive},
		run: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
			start := time.Now()
			err := d.call(ctx)
			end := time.Now()
			log.add(end, end.Sub(start))
			if err != nil {
				return nil, err
			}
			return &domain.Result{Status: domain.StatusCompleted}, nil
		},
	}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 128, 256
	cfg.DrainTimeout = time.Second
	// Only warnings logged: a verbose run's debug lines for every task
	// would take CPU from what is measured.
	quiet := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := newHarnessLogging(t, cfg, quiet, on("t", ex))
	h.run(t)

	ctx, stopFeeding := context.WithCancel(context.Background())
	defer stopFeeding()
	fed := make(chan error, 1)
	go func() { fed <- feed(ctx, h.sources["t"].in()) }()

	start := time.Now()
	half, end := start.Add(run/2), start.Add(run)
	var limits []int
	queuedMin := -1
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for now := range ticker.C {
		if now.After(end) {
			break
		}
		if now.Before(half) {
			continue
		}
		load := h.rt.Stats().Types[typ]
		limits = append(limits, load.Limit)
		if queuedMin < 0 || load.Queued < queuedMin {
			queuedMin = load.Queued
		}
	}
	stopFeeding()
	require.NoError(t, <-fed)
	require.NotEmpty(t, limits)
	assert.Greater(t, queuedMin, 100, "the offered load keeps more than MaxConcurrentTasks waiting")

	took := log.since(half)
	require.NotEmpty(t, took)
	d.mu.Lock()
	defer d.mu.Unlock()
	return adaptiveRun{
		run: run, handled: len(took), p50: percentile(took, 50), p99: percentile(took, 99),
		p90: percentile(took, 90), worst: slices.Max(took),
		limitMedian: percentile(limits, 50), limits: limits, peak: d.peak,
	}
}

// feed offers new tasks whenever the runtime has room, until ctx ends.
func feed(ctx context.Context, in ports.Intake) error {
	for i := 0; ; {
		room, err := in.AwaitCapacity(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, domain.ErrDraining) {
				return nil
			}
			return err
		}
		for range room {
			i++
			tk := task("run-"+strconv.Itoa(i), "n", 1)
			err := in.Offer(ctx, ports.Delivery{Task: &tk, Settle: func(error) {}})
			if errors.Is(err, domain.ErrOverloaded) {
				break
			}
			if err != nil {
				return fmt.Errorf("offer: %w", err)
			}
		}
	}
}

func TestAdaptiveConcurrencySettlesNearTheDownstreamsKneeAndKeepsP99Low(t *testing.T) {
	if testing.Short() {
		t.Skip("a timed measurement of several seconds")
	}
	unloaded := unloadedLatency(t)

	got := saturate(t, true, adaptiveSeconds(t))
	t.Logf("adaptive on, %s of load: unloaded latency %s; last half: %d handlers, p50 %s, p90 %s, p99 %s (%.2fx unloaded), max %s, limit median %d (min %d, max %d), downstream peak in flight %d",
		got.run, unloaded, got.handled, got.p50, got.p90, got.p99, float64(got.p99)/float64(unloaded), got.worst,
		got.limitMedian, slices.Min(got.limits), slices.Max(got.limits), got.peak)
	assert.GreaterOrEqual(t, got.limitMedian, 15, "the limit settles near the downstream's knee of 20")
	assert.LessOrEqual(t, got.limitMedian, 25, "the limit settles near the downstream's knee of 20")
	assert.Less(t, got.p99, 2*unloaded, "p99 stays below twice the unloaded latency")

	control := saturate(t, false, 2*time.Second)
	t.Logf("adaptive off (control), %s of load: last half: %d handlers, p50 %s, p99 %s (%.2fx unloaded), limit %d",
		control.run, control.handled, control.p50, control.p99, float64(control.p99)/float64(unloaded), control.limitMedian)
	assert.Equal(t, 100, control.limitMedian, "a fixed limit is MaxConcurrentTasks")
	assert.Greater(t, control.p99, 4*unloaded, "without adaptive concurrency the downstream's p99 is far above twice its unloaded latency")
}
