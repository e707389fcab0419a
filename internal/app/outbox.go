package app

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// outbox holds one transport's results until its sink acknowledges them.
// It is bounded: put blocks while it is full, which holds the worker and so
// slows intake (backpressure) instead of buffering without bound. Senders
// take batches and resend each with backoff until it is acknowledged or the
// outbox's context ends.
type outbox struct {
	transport   string
	sink        ports.ResultSink
	items       chan outboxItem
	sealed      chan struct{} // closed when no more puts will come
	batchSize   int
	callTimeout time.Duration
	backoff     domain.Backoff
	log         *slog.Logger
	observer    Observer
	// done is called once per item with nil when acknowledged, or with the
	// reason it was given up.
	done func(outboxItem, error)

	retries atomic.Int64
}

type outboxItem struct {
	result domain.Result
	job    *job
}

// put queues it, blocking while the outbox is full. It returns false if ctx
// ended first; the item was not queued.
func (o *outbox) put(ctx context.Context, it outboxItem) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case o.items <- it:
		return true
	case <-ctx.Done():
		return false
	}
}

// seal tells the senders that no more items will be put: they deliver what
// is queued and return.
func (o *outbox) seal() { close(o.sealed) }

// send is one sender's loop. It returns once the outbox is sealed and empty,
// or ctx has ended (every item it still holds or finds is then given up).
func (o *outbox) send(ctx context.Context) {
	for {
		var first outboxItem
		select {
		case first = <-o.items:
		case <-o.sealed:
			for o.deliverQueued(ctx) {
			}
			return
		case <-ctx.Done():
			o.giveUpQueued(context.Cause(ctx))
			return
		}
		o.deliver(ctx, o.fillBatch(first))
	}
}

// fillBatch adds whatever is queued now to first, up to the batch size,
// without waiting: latency is never traded for batch size.
func (o *outbox) fillBatch(first outboxItem) []outboxItem {
	batch := []outboxItem{first}
	for len(batch) < o.batchSize {
		select {
		case it := <-o.items:
			batch = append(batch, it)
		default:
			return batch
		}
	}
	return batch
}

// deliverQueued delivers one batch of what is queued; it reports false when
// nothing was.
func (o *outbox) deliverQueued(ctx context.Context) bool {
	select {
	case it := <-o.items:
		o.deliver(ctx, o.fillBatch(it))
		return true
	default:
		return false
	}
}

func (o *outbox) giveUpQueued(cause error) {
	for {
		select {
		case it := <-o.items:
			o.done(it, cause)
		default:
			return
		}
	}
}

// deliver sends batch until the sink acknowledges it or ctx ends.
func (o *outbox) deliver(ctx context.Context, batch []outboxItem) {
	results := make([]domain.Result, len(batch))
	for i, it := range batch {
		results[i] = it.result
	}
	for attempt := 0; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, o.callTimeout)
		err := o.sink.Deliver(callCtx, results)
		cancel()
		if err == nil {
			oldest := results[0].CompletedAt
			for _, r := range results[1:] {
				if r.CompletedAt.Before(oldest) {
					oldest = r.CompletedAt
				}
			}
			o.observer.ResultsDelivered(o.transport, len(batch), time.Since(oldest))
			for _, it := range batch {
				o.done(it, nil)
			}
			return
		}
		o.retries.Add(1)
		o.observer.DeliveryRetried(o.transport)
		o.log.Warn("result delivery failed, will retry",
			slog.String("transport", o.transport), slog.Int("results", len(batch)),
			slog.Int("attempt", attempt+1), slog.Any("error", err))
		if werr := o.backoff.Wait(ctx, attempt); werr != nil {
			for _, it := range batch {
				o.done(it, err)
			}
			return
		}
	}
}
