package domain

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBackoffDelayGrowsExponentially(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Hour, Multiplier: 2}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for retry, w := range want {
		assert.Equal(t, w, b.Delay(retry), "retry %d", retry)
	}

	b.Multiplier = 3
	assert.Equal(t, 900*time.Millisecond, b.Delay(2), "multiplier 3, retry 2")
}

func TestBackoffDelayIsCappedByMax(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}
	assert.Equal(t, 800*time.Millisecond, b.Delay(3))
	assert.Equal(t, time.Second, b.Delay(4), "1.6s is capped")
	assert.Equal(t, time.Second, b.Delay(1000), "huge retries stay capped")
}

func TestBackoffDelayWithoutMaxSaturatesInsteadOfOverflowing(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Multiplier: 2}
	for _, retry := range []int{40, 64, 1000, 1 << 20} {
		assert.Equal(t, time.Duration(1<<63-1), b.Delay(retry), "retry %d", retry)
	}
}

func TestBackoffMultiplierBelowOneIsTreatedAsOne(t *testing.T) {
	for _, m := range []float64{0, 0.5, -2} {
		b := Backoff{Initial: 250 * time.Millisecond, Max: time.Hour, Multiplier: m}
		for retry := range 5 {
			assert.Equal(t, 250*time.Millisecond, b.Delay(retry), "multiplier %v, retry %d", m, retry)
		}
	}
}

func TestBackoffJitterStaysWithinBounds(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Hour, Multiplier: 2, Jitter: 0.2}
	lowest, highest := time.Duration(1<<63-1), time.Duration(0)
	for range 2000 {
		d := b.Delay(0)
		require.GreaterOrEqual(t, d, 800*time.Millisecond)
		require.LessOrEqual(t, d, 1200*time.Millisecond)
		lowest, highest = min(lowest, d), max(highest, d)
	}
	// With 2000 uniform samples, missing either outer quarter of the range
	// has a probability far below one in 10^200: a failure here means the
	// jitter is not spread.
	assert.Less(t, lowest, 900*time.Millisecond, "jitter never went low")
	assert.Greater(t, highest, 1100*time.Millisecond, "jitter never went high")
}

func TestBackoffJitterNeverExceedsMax(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: time.Second, Multiplier: 2, Jitter: 0.5}
	for range 1000 {
		d := b.Delay(3)
		require.LessOrEqual(t, d, time.Second)
		require.GreaterOrEqual(t, d, 500*time.Millisecond)
	}
}

func TestDefaultBackoff(t *testing.T) {
	assert.Equal(t, Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2}, DefaultBackoff)
}

func TestBackoffWaitReturnsAfterTheDelay(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1}
	assert.NoError(t, b.Wait(context.Background(), 0))
}

func TestBackoffWaitReturnsTheCauseWhenContextEnds(t *testing.T) {
	b := Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 1}
	cause := errors.New("engine went away")

	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(cause)
		assert.ErrorIs(t, b.Wait(ctx, 0), cause)
	})

	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		waited := make(chan error, 1)
		go func() { waited <- b.Wait(ctx, 0) }()
		cancel(cause)
		select {
		case err := <-waited:
			assert.ErrorIs(t, err, cause)
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return when its context was cancelled")
		}
	})

	t.Run("cancelled without a cause", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, b.Wait(ctx, 0), context.Canceled)
	})
}
