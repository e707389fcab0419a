package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// outbox holds one transport's results until its sink acknowledges them.
//
// A worker's put never blocks: a transport whose sink is down or slow must
// not hold workers that other transports need. Instead the outbox's backlog
// (results queued or being delivered) gates that transport's own intake:
// once it reaches limit, Offer refuses the transport's tasks and its
// AwaitCapacity waits (see intake), so the backlog is bounded by limit plus
// the tasks already admitted.
//
// Senders take batches and deliver each until it is acknowledged: a
// transient failure is resent with backoff until the outbox's context ends;
// a permanent refusal (domain.ErrResultRejected) of a batch is bisected to
// isolate the result at fault, which is replaced by its minimal FAILED form,
// and dead-lettered (logged, counted, settled with domain.ErrUndeliverable)
// if even that is refused (see deliver for when a refusal is pinned on a
// result). One poison result never stops the others.
type outbox struct {
	transport   string
	sink        ports.ResultSink
	limit       int // backlog at which the transport's intake pauses
	batchSize   int
	callTimeout time.Duration
	backoff     domain.Backoff
	log         *slog.Logger
	observer    Observer
	// tracer starts a span per Deliver call (nil: tracing is off).
	tracer trace.Tracer
	// done is called once per item, with a batch of items at a time, with
	// nil when acknowledged, or with the reason they were given up
	// (wrapping domain.ErrUndeliverable when dead-lettered). It may set the
	// items' settles.
	done func([]outboxItem, error)

	mu sync.Mutex
	// queue is a ring of the items waiting for a sender: count of them,
	// oldest at head. It doubles when full and never shrinks: it holds at
	// most the backlog, whose bound (see Config.OutboxSize) bounds it too,
	// and an array kept from a burst serves the next one without growing.
	queue []outboxItem
	head  int
	count int
	// backlog counts the items queued plus those taken by senders and not
	// yet done. It is written under mu, and read without it by the checks
	// every offer makes (isFull, room); full reads it under mu.
	backlog atomic.Int64
	sealed  bool // no more puts will come
	// ready holds one wake-up for a sender when the queue is not empty or
	// the outbox is sealed; a sender that leaves work behind passes it on.
	ready chan struct{}
	// drained is closed and replaced whenever the backlog falls below limit
	// again, waking intakes waiting for room.
	drained chan struct{}

	retries atomic.Int64
	// acked counts acknowledged deliveries: the evidence that the engine
	// takes results, which pins a refusal on the result refused.
	acked atomic.Int64
}

type outboxItem struct {
	result domain.Result
	job    *job
	// minimal: the result is already the minimal FAILED form of a refused
	// one; if it is refused too, it is dead-lettered.
	minimal bool
	// suspect: the sink refused the result for good, alone, before any
	// evidence pinned the refusal on it; refusedAt is the count of
	// acknowledged deliveries when that happened (see deliver).
	suspect   bool
	refusedAt int64
	// settles are the Settle callbacks of the job's deliveries, taken from
	// the task table when the item is settled (see Runtime.settleAll).
	settles []func(error)
}

func newOutbox(name string, sink ports.ResultSink, cfg Config, log *slog.Logger, done func([]outboxItem, error)) *outbox {
	return &outbox{
		transport:   name,
		sink:        sink,
		limit:       cfg.OutboxSize,
		batchSize:   cfg.ResultBatchSize,
		callTimeout: cfg.CallTimeout,
		backoff:     cfg.ResultBackoff,
		log:         log,
		observer:    cfg.Observer,
		tracer:      cfg.Tracer,
		done:        done,
		ready:       make(chan struct{}, 1),
		drained:     make(chan struct{}),
	}
}

// put queues it for delivery without blocking. It returns false once the
// outbox is sealed; the item was not queued.
func (o *outbox) put(it outboxItem) bool {
	o.mu.Lock()
	if o.sealed {
		o.mu.Unlock()
		return false
	}
	o.push(it)
	o.backlog.Add(1)
	o.mu.Unlock()
	o.wake()
	return true
}

// push appends it to the queue. Callers hold mu.
func (o *outbox) push(it outboxItem) {
	if o.count == len(o.queue) {
		grown := make([]outboxItem, max(minQueue, 2*len(o.queue)))
		for i := range o.count {
			grown[i] = o.queue[(o.head+i)%len(o.queue)]
		}
		o.queue, o.head = grown, 0
	}
	o.queue[(o.head+o.count)%len(o.queue)] = it
	o.count++
}

// minQueue is the length of a queue's first array.
const minQueue = 16

// waiting returns how many items wait in the queue. Callers hold mu.
func (o *outbox) waiting() int { return o.count }

func (o *outbox) wake() {
	select {
	case o.ready <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// pending returns how many results wait for the sink's acknowledgement:
// queued, or taken by a sender and not yet done. It reads without the lock,
// for the metrics.
func (o *outbox) pending() int { return int(o.backlog.Load()) }

// isFull reports whether the backlog has reached the limit, without
// taking the lock: Offer asks for every task.
func (o *outbox) isFull() bool { return o.backlog.Load() >= int64(o.limit) }

// full reports whether the backlog has reached the limit, and returns the
// channel closed when it next falls below it.
func (o *outbox) full() (bool, <-chan struct{}) {
	if !o.isFull() {
		return false, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.isFull(), o.drained
}

// room returns how many more results the transport may admit before its
// intake pauses (at least 0).
func (o *outbox) room() int { return max(0, o.limit-int(o.backlog.Load())) }

// settled records that n items taken by a sender are done.
func (o *outbox) settled(n int) {
	o.mu.Lock()
	wasFull := o.isFull()
	o.backlog.Add(int64(-n))
	if wasFull && !o.isFull() {
		close(o.drained)
		o.drained = make(chan struct{})
	}
	o.mu.Unlock()
}

// take moves up to batchSize queued items into buf, which it returns, so
// that a sender reuses one slice from batch to batch. It reports false,
// with nothing taken, when the queue is empty, and whether more items
// still wait.
func (o *outbox) take(buf []outboxItem) (batch []outboxItem, ok, more bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(o.waiting(), o.batchSize)
	if n == 0 {
		return buf[:0], false, false
	}
	batch = buf[:0]
	for range n {
		batch = append(batch, o.queue[o.head])
		o.queue[o.head] = outboxItem{} // let the result go once delivered
		o.head = (o.head + 1) % len(o.queue)
	}
	o.count -= n
	return batch, true, o.count > 0
}

func (o *outbox) isSealed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sealed
}

// seal tells the senders that no more items will be put: they deliver what
// is queued and return.
func (o *outbox) seal() {
	o.mu.Lock()
	o.sealed = true
	o.mu.Unlock()
	o.wake()
}

// send is one sender's loop. It returns once the outbox is sealed and empty,
// or ctx has ended (every item it still holds or finds is then given up).
func (o *outbox) send(ctx context.Context) {
	// A context of the sender's own parents each call's: the contexts of
	// concurrent calls would otherwise all register with ctx, under its
	// lock.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &sender{outbox: o}
	defer s.deadlines.release()
	var batch []outboxItem // reused: nothing holds a batch once delivered
	for {
		var ok, more bool
		if batch, ok, more = o.take(batch); ok {
			if more {
				o.wake() // let another sender take the rest
			}
			s.deliver(ctx, batch)
			clear(batch) // let the results go
			continue
		}
		if o.isSealed() {
			o.wake() // the next sender sees the seal too
			return
		}
		select {
		case <-o.ready:
		case <-ctx.Done():
			o.giveUpQueued(context.Cause(ctx))
			return
		}
	}
}

// giveUpQueued settles every queued item with cause.
func (o *outbox) giveUpQueued(cause error) {
	for {
		batch, ok, _ := o.take(nil)
		if !ok {
			return
		}
		o.finish(batch, cause)
	}
}

// finish settles a batch taken from the queue.
func (o *outbox) finish(batch []outboxItem, err error) {
	o.done(batch, err)
	o.settled(len(batch))
}

// sender is one of an outbox's senders: the outbox, with what the sender
// keeps from one call to the sink to the next.
type sender struct {
	*outbox
	// deadlines bounds each call to CallTimeout (see deliverOnce).
	deadlines deadlines
}

// refusal is a result the sink refused for good, alone, and why.
type refusal struct {
	item outboxItem
	err  error
	// pinned: the refusal is the result's own fault (see deliver).
	pinned bool
}

// deliver sends batch until every result in it is settled: acknowledged,
// replaced by its minimal FAILED form and acknowledged, dead-lettered, or
// given up when the outbox's context ends.
//
// A refusal for good is pinned on one result only with evidence. A result
// too large for the engine is its own fault. For any other refusal (an
// invalid argument, say), the engine must have acknowledged another
// delivery after this batch was first refused, and before the result was
// sent again and refused again: an engine that refuses everything (it forgot
// the executor, it is misconfigured) is in trouble of its own, and its
// refusals are treated as transient, so that no output is lost to them. A
// result refused alone waits behind the other queued results, whose
// acknowledgements are that evidence; with none queued, its minimal FAILED
// form is the probe (probeMinimal).
func (o *sender) deliver(ctx context.Context, batch []outboxItem) {
	o.deliverSince(ctx, batch, -1)
}

// deliverSince is deliver, with the acknowledgements counted when the batch
// was first refused (-1: not yet).
func (o *sender) deliverSince(ctx context.Context, batch []outboxItem, firstRefusal int64) {
	for attempt := 0; len(batch) > 0; attempt++ {
		refused := o.deliverSplitting(ctx, batch, &firstRefusal)
		batch = batch[:0:0]
		var lastErr error
		for _, r := range refused {
			if r.pinned {
				o.replace(ctx, r, &firstRefusal)
				continue
			}
			batch, lastErr = append(batch, r.item), r.err
		}
		if len(batch) == 0 {
			return
		}
		o.retries.Add(1)
		o.observer.DeliveryRetried(o.transport)
		o.log.Warn("the engine refuses results as if for good while it acknowledges none; retrying",
			slog.String("transport", o.transport), slog.Int("results", len(batch)), slog.Int("attempt", attempt+1), slog.Any("error", lastErr))
		// Other results may be waiting behind the suspects: let the sender
		// deliver them first (their acknowledgements are the evidence that
		// pins the refusal), and meet the suspects again behind them.
		if o.requeueBehindOthers(batch, firstRefusal) {
			return
		}
		if batch = o.probeMinimal(ctx, batch, lastErr, firstRefusal); len(batch) == 0 {
			return
		}
		if o.backoff.Wait(ctx, attempt) != nil {
			o.finish(batch, lastErr)
			return
		}
	}
}

// probeMinimal is the evidence of last resort, for suspects with no other
// result to deliver: it sends each suspect's minimal FAILED form. An engine
// that takes the minimal form but refused the full one refused the result's
// own content, so the minimal form stands in for it (as replace does); one
// that refuses the minimal form too is taken to refuse everything for now,
// and the full result stays to be retried. It returns the suspects left.
//
// No suspect is probed once the engine has acknowledged anything since the
// refusals began (firstRefusal): it takes results again, so the full result
// is sent again, and a refusal then is pinned on it as deliver says. Probed
// then, the minimal form of a result refused just before the engine came
// back would be taken and stand in for a result the engine would now take.
func (o *sender) probeMinimal(ctx context.Context, suspects []outboxItem, refusal error, firstRefusal int64) []outboxItem {
	var left []outboxItem
	for _, it := range suspects {
		if it.minimal || o.acked.Load() > firstRefusal {
			left = append(left, it)
			continue
		}
		probe := it
		probe.result = it.result.Minimal(domain.CodeResultRejected, fmt.Sprintf("the engine refused the %s result: %v", it.result.Status, refusal))
		probe.minimal = true
		switch err := o.deliverOnce(ctx, []outboxItem{probe}); {
		case err == nil:
			o.resultLog(it.result).Warn("result refused by the engine for good while its minimal FAILED form was taken; the minimal form stands in its place",
				slog.String("status", string(it.result.Status)), slog.String("code", domain.CodeResultRejected), slog.Any("error", refusal))
			o.finish([]outboxItem{probe}, nil)
		case errors.Is(err, domain.ErrResultRejected):
			left = append(left, it)
		default:
			o.finish([]outboxItem{it}, err) // the outbox's context ended
		}
	}
	return left
}

// requeueBehindOthers puts suspects back at the end of the queue, marked
// with the acknowledgement count of their first refusal, when other results
// are queued; it reports whether it did.
func (o *sender) requeueBehindOthers(suspects []outboxItem, firstRefusal int64) bool {
	o.mu.Lock()
	if o.waiting() == 0 {
		o.mu.Unlock()
		return false
	}
	for _, it := range suspects {
		if !it.suspect || firstRefusal < it.refusedAt {
			it.suspect, it.refusedAt = true, firstRefusal
		}
		o.push(it) // still in the backlog: it never left it
	}
	o.mu.Unlock()
	o.wake()
	return true
}

// deliverSplitting sends batch, halving a batch the sink refuses for good
// until each refused result is alone. It settles what is acknowledged (and
// everything, when the outbox's context ends) and returns the results
// refused alone, pinned as deliver says.
func (o *sender) deliverSplitting(ctx context.Context, batch []outboxItem, firstRefusal *int64) []refusal {
	sentAt := o.acked.Load()
	err := o.deliverOnce(ctx, batch)
	switch {
	case err == nil:
		o.finish(batch, nil)
		return nil
	case !errors.Is(err, domain.ErrResultRejected):
		o.finish(batch, err) // the outbox's context ended while retrying
		return nil
	}
	if *firstRefusal < 0 {
		*firstRefusal = sentAt
	}
	if len(batch) == 1 {
		since := *firstRefusal
		if it := batch[0]; it.suspect && it.refusedAt < since {
			since = it.refusedAt // refused alone before, in an earlier batch
		}
		pinned := errors.Is(err, domain.ErrResultTooLarge) || sentAt > since
		return []refusal{{item: batch[0], err: err, pinned: pinned}}
	}
	half := len(batch) / 2
	return append(o.deliverSplitting(ctx, batch[:half], firstRefusal), o.deliverSplitting(ctx, batch[half:], firstRefusal)...)
}

// replace settles a result refused for good by its own fault: it sends its
// minimal FAILED form in its place, and dead-letters it if that is refused
// for its own fault too.
func (o *sender) replace(ctx context.Context, r refusal, firstRefusal *int64) {
	it := r.item
	if it.minimal {
		o.observer.ResultDeadLettered(o.transport)
		o.resultLog(it.result).Error("result dead-lettered: the engine refused even its minimal FAILED form", slog.Any("error", r.err))
		o.finish([]outboxItem{it}, fmt.Errorf("%w: %w", domain.ErrUndeliverable, r.err))
		return
	}
	code := domain.CodeResultRejected
	if errors.Is(r.err, domain.ErrResultTooLarge) {
		code = domain.CodeOutputTooLarge
	}
	o.resultLog(it.result).Warn("result refused by the engine for good; sending a minimal FAILED result in its place",
		slog.String("status", string(it.result.Status)), slog.String("code", code), slog.Any("error", r.err))
	it.result = it.result.Minimal(code, fmt.Sprintf("the engine refused the %s result: %v", it.result.Status, r.err))
	it.minimal = true
	o.deliverSince(ctx, []outboxItem{it}, *firstRefusal) // still one item of the backlog; the evidence holds
}

// deliverOnce sends batch, resending it with backoff after transient
// failures. It returns nil when acknowledged, an error wrapping
// domain.ErrResultRejected when the sink refused it for good, or the last
// transient error once ctx has ended.
func (o *sender) deliverOnce(ctx context.Context, batch []outboxItem) error {
	results := make([]domain.Result, len(batch))
	for i, it := range batch {
		results[i] = it.result
	}
	for attempt := 0; ; attempt++ {
		// ctx is the sender's own on every call, as deadlines needs.
		callCtx, cancel := context.WithCancel(o.deadlines.parent(ctx, o.callTimeout, time.Now()))
		span := o.startBatchSpan(batch, attempt)
		if span != nil {
			callCtx = trace.ContextWithSpan(callCtx, span)
		}
		err := o.sink.Deliver(callCtx, results)
		cancel()
		endBatchSpan(span, err)
		if err == nil {
			oldest := results[0].CompletedAt
			for _, r := range results[1:] {
				if r.CompletedAt.Before(oldest) {
					oldest = r.CompletedAt
				}
			}
			o.acked.Add(1)
			o.observer.ResultsDelivered(o.transport, len(batch), time.Since(oldest))
			return nil
		}
		if errors.Is(err, domain.ErrResultRejected) {
			return err
		}
		o.retries.Add(1)
		o.observer.DeliveryRetried(o.transport)
		o.log.Warn("result delivery failed, will retry",
			slog.String("transport", o.transport), slog.Int("results", len(batch)),
			slog.Int("attempt", attempt+1), slog.Any("error", err))
		if werr := o.backoff.Wait(ctx, attempt); werr != nil {
			return err
		}
	}
}

func (o *outbox) resultLog(r domain.Result) *slog.Logger {
	return o.log.With(slog.String("transport", o.transport), slog.String("run_id", r.RunID), slog.String("node_id", r.NodeID),
		slog.String("task_id", r.TaskID), slog.Int("attempt", r.Attempt), slog.String("executor_id", r.ExecutorID))
}
