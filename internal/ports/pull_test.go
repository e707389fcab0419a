package ports

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// scriptedIntake is a fake Intake for the tests of Pull: each AwaitCapacity
// call returns the next of awaits (room while none are left), and records
// the calls. Offer and Cancel are not used by Pull (its offer callback is).
type scriptedIntake struct {
	mu     sync.Mutex
	awaits []error
	calls  []string // "await" and "offer", in order
}

func (s *scriptedIntake) AwaitCapacity(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "await")
	if len(s.awaits) == 0 {
		return 1, nil
	}
	err := s.awaits[0]
	s.awaits = s.awaits[1:]
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (s *scriptedIntake) Offer(context.Context, Delivery) error {
	panic("Pull offers through its callback")
}

func (s *scriptedIntake) Cancel(string, string) bool { return false }

// offers returns an offer callback that returns results in turn (nil once
// they run out) and records each call on s.
func (s *scriptedIntake) offers(results ...error) func(context.Context) error {
	return func(context.Context) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.calls = append(s.calls, "offer")
		if len(results) == 0 {
			return nil
		}
		err := results[0]
		results = results[1:]
		return err
	}
}

func (s *scriptedIntake) recorded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// recordWaits is a backoff that returns at once and records the retry
// numbers it was asked to wait for.
func recordWaits(waits *[]int) func(context.Context, int) error {
	return func(ctx context.Context, retry int) error {
		*waits = append(*waits, retry)
		return ctx.Err()
	}
}

var (
	overloaded = fmt.Errorf("fake: %w", domain.ErrOverloaded)
	draining   = fmt.Errorf("fake: %w", domain.ErrDraining)
	invalid    = fmt.Errorf("fake: %w", domain.ErrInvalidTask)
	unnamed    = errors.New("fake: something the contract does not name")
	// rateLimited carries a 1 ms wait, which Pull sleeps for real.
	rateLimited = fmt.Errorf("fake: %w", &domain.RateLimitedError{Type: "pay", RetryAfter: time.Millisecond})
)

// TestPullRefusalPolicy checks each line of Pull's refusal policy: what it
// returns, how often it waits for room and offers, and when it backs off.
func TestPullRefusalPolicy(t *testing.T) {
	cases := []struct {
		name    string
		awaits  []error // AwaitCapacity's answers, room once they run out
		offers  []error // offer's answers, nil once they run out
		want    error   // what Pull returns (nil: taken)
		calls   []string
		backoff []int // the retries it waited for
	}{
		{name: "taken at once", want: nil, calls: []string{"await", "offer"}},
		{name: "overloaded once: offered again at once", offers: []error{overloaded},
			calls: []string{"await", "offer", "await", "offer"}},
		{name: "overloaded again: backs off", offers: []error{overloaded, overloaded, overloaded},
			calls: []string{"await", "offer", "await", "offer", "await", "offer", "await", "offer"}, backoff: []int{1, 2}},
		{name: "rate limited: waits its delay, no backoff, offers again", offers: []error{rateLimited, rateLimited, rateLimited},
			calls: []string{"await", "offer", "await", "offer", "await", "offer", "await", "offer"}},
		{name: "rate limited between overloads: the backoff starts over", offers: []error{overloaded, rateLimited, overloaded},
			calls: []string{"await", "offer", "await", "offer", "await", "offer", "await", "offer"}},
		{name: "invalid: returned after one offer", offers: []error{invalid}, want: domain.ErrInvalidTask,
			calls: []string{"await", "offer"}},
		{name: "draining at Offer: returned", offers: []error{draining}, want: domain.ErrDraining,
			calls: []string{"await", "offer"}},
		{name: "draining at AwaitCapacity: returned, nothing offered", awaits: []error{draining}, want: domain.ErrDraining,
			calls: []string{"await"}},
		{name: "unnamed Offer error: retried after the backoff", offers: []error{unnamed},
			calls: []string{"await", "offer", "await", "offer"}, backoff: []int{0}},
		{name: "unnamed AwaitCapacity error: retried after the backoff", awaits: []error{unnamed},
			calls: []string{"await", "await", "offer"}, backoff: []int{0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := &scriptedIntake{awaits: tc.awaits}
			var waits []int
			err := pull(t.Context(), in, in.offers(tc.offers...), recordWaits(&waits))
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
			assert.Equal(t, tc.calls, in.recorded(), "calls to AwaitCapacity and offer")
			assert.Equal(t, tc.backoff, waits, "backoff waits")
		})
	}
}

// TestPullStopsWhenCtxEnds checks that Pull gives the task back to the
// source when ctx ends: before any call, during the offer, or during the
// backoff, returning ctx's cause and offering nothing more.
func TestPullStopsWhenCtxEnds(t *testing.T) {
	stopped := errors.New("source stopped")

	t.Run("before Pull", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		cancel(stopped)
		in := &scriptedIntake{}
		err := pull(ctx, in, in.offers(), recordWaits(new([]int)))
		require.ErrorIs(t, err, stopped)
		assert.Empty(t, in.recorded(), "no AwaitCapacity, no offer")
	})

	t.Run("during an offer refused as overloaded", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		in := &scriptedIntake{}
		offer := in.offers(overloaded)
		var waits []int
		err := pull(ctx, in, func(ctx context.Context) error { cancel(stopped); return offer(ctx) }, recordWaits(&waits))
		require.ErrorIs(t, err, stopped)
		assert.Equal(t, []string{"await", "offer"}, in.recorded())
		assert.Empty(t, waits)
	})

	t.Run("during the backoff", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		in := &scriptedIntake{}
		wait := func(ctx context.Context, _ int) error { cancel(stopped); return context.Cause(ctx) }
		err := pull(ctx, in, in.offers(unnamed), wait)
		require.ErrorIs(t, err, stopped)
		assert.Equal(t, []string{"await", "offer"}, in.recorded())
	})

	t.Run("waiting for room", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		in := &blockingAwait{entered: make(chan struct{})}
		done := make(chan error, 1)
		go func() {
			done <- Pull(ctx, in, func(context.Context) error { return errors.New("offered without room") })
		}()
		<-in.entered
		cancel(stopped)
		select {
		case err := <-done:
			require.ErrorIs(t, err, stopped)
		case <-time.After(5 * time.Second):
			t.Fatal("Pull did not return when ctx ended while it waited for room")
		}
	})
}

// blockingAwait's AwaitCapacity waits for ctx to end, as a full runtime's.
type blockingAwait struct {
	scriptedIntake
	entered chan struct{}
}

func (b *blockingAwait) AwaitCapacity(ctx context.Context) (int, error) {
	close(b.entered)
	<-ctx.Done()
	return 0, context.Cause(ctx)
}

// TestPullBacksOffForReal checks that Pull itself uses its backoff: an
// intake that keeps answering an unnamed error is retried after a real delay,
// not in a busy loop.
func TestPullBacksOffForReal(t *testing.T) {
	in := &scriptedIntake{}
	start := time.Now()
	err := Pull(t.Context(), in, in.offers(unnamed, unnamed))
	require.NoError(t, err)
	// Two waits: at least 10 ms and 20 ms, less the 20% jitter.
	assert.GreaterOrEqual(t, time.Since(start), 24*time.Millisecond)
	assert.Equal(t, []string{"await", "offer", "await", "offer", "await", "offer"}, in.recorded())
}

// A rate-limit refusal makes Pull wait the delay it carries, not less (no
// spin) and then offer again; a context that ends cuts the wait short.
func TestPullWaitsTheRateLimitDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	limited := &domain.RateLimitedError{Type: "pay", RetryAfter: delay}
	in := &scriptedIntake{}
	start := time.Now()
	require.NoError(t, pull(t.Context(), in, in.offers(limited), recordWaits(new([]int))))
	assert.GreaterOrEqual(t, time.Since(start), delay)
	assert.Equal(t, []string{"await", "offer", "await", "offer"}, in.recorded())

	long := &domain.RateLimitedError{Type: "pay", RetryAfter: time.Hour}
	ctx, cancel := context.WithCancel(t.Context())
	in = &scriptedIntake{}
	done := make(chan error, 1)
	go func() { done <- pull(ctx, in, in.offers(long), recordWaits(new([]int))) }()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Pull did not return when its context ended")
	}
}
