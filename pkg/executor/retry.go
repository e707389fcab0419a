package executor

import (
	"context"
	"fmt"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// RetryOption configures Retry.
type RetryOption func(*retryPolicy)

type retryPolicy struct {
	backoff     domain.Backoff
	maxAttempts int
}

// WithBackoff sets the first delay and the cap of the exponential backoff
// (defaults: 100ms and 5s, doubling).
func WithBackoff(initial, maxDelay time.Duration) RetryOption {
	return func(p *retryPolicy) { p.backoff.Initial, p.backoff.Max = initial, maxDelay }
}

// WithMultiplier sets how much each delay grows (default 2).
func WithMultiplier(m float64) RetryOption {
	return func(p *retryPolicy) { p.backoff.Multiplier = m }
}

// WithJitter spreads each delay by up to this fraction either way (default 0.2).
func WithJitter(fraction float64) RetryOption {
	return func(p *retryPolicy) { p.backoff.Jitter = fraction }
}

// AtMost bounds the number of attempts, the first included (default 3).
func AtMost(attempts int) RetryOption {
	return func(p *retryPolicy) { p.maxAttempts = attempts }
}

// Retry calls op until it succeeds, returns a permanent error (see Permanent
// and Fail), has been called AtMost times, or ctx ends; between attempts it
// waits with exponential backoff and jitter. It returns nil or the last
// error, annotated with the attempt count; when ctx ends it returns ctx's
// cause, with the last error (if any) also in the chain, so that errors.Is
// and errors.As find both. It is the Go counterpart of the
// Java SDK's retry().withBackOff(...).atMost(n):
//
//	err := executor.Retry(ctx, func(ctx context.Context) error {
//		return gateway.Charge(ctx, order)
//	}, executor.WithBackoff(200*time.Millisecond, 2*time.Second), executor.AtMost(5))
func Retry(ctx context.Context, op func(ctx context.Context) error, opts ...RetryOption) error {
	_, err := RetryValue(ctx, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, op(ctx)
	}, opts...)
	return err
}

// RetryValue is Retry for operations that return a value.
func RetryValue[T any](ctx context.Context, op func(ctx context.Context) (T, error), opts ...RetryOption) (T, error) {
	p := retryPolicy{
		backoff:     domain.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2},
		maxAttempts: 3,
	}
	for _, o := range opts {
		o(&p)
	}
	if p.maxAttempts < 1 {
		p.maxAttempts = 1
	}
	var zero T
	for attempt := 1; ; attempt++ {
		if err := context.Cause(ctx); err != nil {
			return zero, err
		}
		v, err := op(ctx)
		if err == nil {
			return v, nil
		}
		if isPermanent(err) {
			return zero, err
		}
		if attempt >= p.maxAttempts {
			return zero, fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		if werr := p.backoff.Wait(ctx, attempt-1); werr != nil {
			// ctx's cause comes first in the chain so that the runtime
			// reports TIMEOUT or CANCELLED, not the last attempt's code.
			return zero, fmt.Errorf("retry interrupted after %d attempts: %w (last error: %w)", attempt, werr, err)
		}
	}
}
