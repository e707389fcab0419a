package ports

import (
	"context"
	"errors"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// pullRetry paces Pull after a refusal it cannot act on at once: an overload
// that repeats, or an error the Intake contract does not name.
var pullRetry = domain.Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2}

// Pull is the caller side of Intake for a pull source, one that fetches its
// tasks (a Kafka consumer, the StreamTasks and ExecuteStream streams, the
// memory engine's queue) rather than being called by the engine. It offers
// one task: it waits on Intake.AwaitCapacity, then calls offer, which makes
// one Intake.Offer with the source's own bookkeeping around it (tracking a
// record, taking the task from a queue, checking a cancellation), and
// repeats until the task is taken or must be left. Every pull source follows
// this one refusal policy:
//
//   - nil: the runtime took the task and will call the Delivery's Settle.
//   - domain.ErrOverloaded: another source took the room AwaitCapacity
//     reported. Pull waits for room again and offers again, at once the first
//     time, then after a short backoff (10 ms doubling to 1 s), so that an
//     intake that keeps refusing cannot make the source spin.
//   - domain.ErrRateLimited (an ErrOverloaded carrying a delay): the task's
//     executor type has no rate-limit token free. Pull waits exactly the
//     delay the refusal carries (domain.RetryAfter), then offers again: the
//     source takes no more than the limit allows, without spinning and
//     without a backoff that would make it take less.
//   - domain.ErrInvalidTask: returned. The runtime refuses a pulled task only
//     when no result can name it (a task a result can name, even malformed,
//     is taken and answered FAILED INVALID_TASK): the source drops it, as
//     nobody can be told, and says so in a throttled log line (Kafka also
//     commits its offset; the memory engine records it in Rejected).
//   - domain.ErrDraining, from AwaitCapacity or Offer: returned, and the
//     source offers nothing more. The task is still the source's: one that
//     redelivers leaves it to be delivered again (Kafka leaves the offset
//     uncommitted, the memory engine requeues it); a stream, which cannot
//     hand a task back, answers it FAILED SHUTDOWN.
//   - ctx ends: ctx's cause is returned; the task is still the source's.
//   - any other error, which the Intake contract does not name: taken as
//     transient and retried after the backoff, the task kept, so that a
//     fault in the runtime loses no task.
//
// A task the source could not decode is offered like any other, with
// Delivery.Malformed set, and falls under the same rules. Pull checks ctx
// before each offer, so that a source whose Stop ends ctx and then takes a
// lock held around Pull (Kafka) knows that no Offer follows.
func Pull(ctx context.Context, intake Intake, offer func(ctx context.Context) error) error {
	return pull(ctx, intake, offer, pullRetry.Wait)
}

// pull is Pull with its backoff as a parameter, for the tests: wait sleeps
// before retry number retry (0 for the first) or returns ctx's cause.
func pull(ctx context.Context, intake Intake, offer func(ctx context.Context) error, wait func(ctx context.Context, retry int) error) error {
	for retries := 0; ; retries++ {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		_, err := intake.AwaitCapacity(ctx)
		if err == nil {
			err = offer(ctx)
		}
		switch {
		case err == nil, errors.Is(err, domain.ErrInvalidTask), errors.Is(err, domain.ErrDraining):
			return err
		case ctx.Err() != nil:
			return context.Cause(ctx)
		}
		if delay, limited := domain.RetryAfter(err); limited {
			if domain.Sleep(ctx, delay) != nil {
				return context.Cause(ctx)
			}
			retries = -1 // a rate limit is no fault: the backoff starts over
			continue
		}
		if retries == 0 && errors.Is(err, domain.ErrOverloaded) {
			continue // the room was taken: wait for more, at once
		}
		if wait(ctx, retries) != nil {
			return context.Cause(ctx)
		}
	}
}
