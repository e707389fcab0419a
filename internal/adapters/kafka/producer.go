package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/domain"
)

// Producer produces records and waits for their acknowledgements. It wraps
// one sarama AsyncProducer (its own client: producers and consumers never
// share one), so that concurrent senders share batches, and a send returns
// as soon as all its records are acknowledged (acks=all) or its context ends.
// The ResultSink, Registrar and Heartbeater of a process share one Producer.
//
// It connects on first use and again after a failed connection, so that a
// service starts while the brokers are down: sends fail meanwhile, and the
// runtime retries them.
type Producer struct {
	brokers []string
	config  *sarama.Config // replaced by a plain one after a fallback
	// mode is the Idempotence asked for; log tells of a fallback.
	mode Idempotence
	log  *slog.Logger
	// idempotent is set while the connected producer is idempotent.
	idempotent atomic.Bool
	async      sarama.AsyncProducer // nil until connected
	// headers, when set, returns the headers to add to a record produced
	// for the given executor id (the bearer token).
	headers func(executorID string) ([]sarama.RecordHeader, error)

	// mu guards Input against Close: sending on the input of a closed
	// sarama producer panics.
	mu     sync.RWMutex
	closed bool
	// connectMu guards async and connecting.
	connectMu sync.Mutex
	// connecting is closed when the connection attempt in progress ends;
	// nil when none is.
	connecting chan struct{}
	connectErr error
	// demuxed is closed when the demux goroutine of the connected producer
	// has returned; Close waits for it.
	demuxed chan struct{}

	// orphans counts records that failed while Close flushed them, after
	// their sends had stopped waiting, with the first such failure, for
	// Close to report; closing is set when Close begins.
	closing     atomic.Bool
	orphansMu   sync.Mutex
	orphans     int
	firstOrphan error

	// isolation is held for reading by every send, and for writing by a
	// send that must be the only record in sarama's pipeline (sendAlone).
	isolation sync.RWMutex
	// inflight counts records handed to sarama and not yet acknowledged or
	// failed; drained is closed and replaced whenever it drops to zero.
	inflightMu sync.Mutex
	inflight   int
	drained    chan struct{}
}

// NewProducer returns a producer for the brokers; it connects on first use.
func NewProducer(cfg Config) (*Producer, error) {
	sc, err := cfg.producerConfig()
	if err != nil {
		return nil, err
	}
	return &Producer{brokers: cfg.Brokers, config: sc, mode: cfg.withDefaults().Idempotence,
		log: slog.Default(), drained: make(chan struct{})}, nil
}

// WithLog sets the logger that tells of a fallback to a producer that is
// not idempotent (slog.Default if not called). Call it before the first
// send.
func (p *Producer) WithLog(log *slog.Logger) { p.log = log }

// Idempotent reports whether the producer connected is idempotent: false
// before it connects, with Idempotence off, or after a fallback.
func (p *Producer) Idempotent() bool { return p.idempotent.Load() }

// connected returns the sarama producer, connecting it if needed. The
// connection is made in the background (sarama's dial ignores contexts), so
// a caller whose ctx ends stops waiting at once; one attempt serves every
// caller waiting meanwhile.
func (p *Producer) connected(ctx context.Context) (sarama.AsyncProducer, error) {
	p.connectMu.Lock()
	if p.async != nil {
		defer p.connectMu.Unlock()
		return p.async, nil
	}
	attempt := p.connecting
	if attempt == nil {
		attempt = make(chan struct{})
		p.connecting = attempt
		go p.connect(attempt)
	}
	p.connectMu.Unlock()
	select {
	case <-attempt:
	case <-ctx.Done():
		return nil, fmt.Errorf("kafka producer for %v: connecting: %w", p.brokers, context.Cause(ctx))
	}
	p.connectMu.Lock()
	defer p.connectMu.Unlock()
	if p.async != nil {
		return p.async, nil
	}
	return nil, p.connectErr
}

// connect makes one connection attempt and ends it by closing done.
func (p *Producer) connect(done chan struct{}) {
	async, err := p.newAsync()
	p.connectMu.Lock()
	defer p.connectMu.Unlock()
	defer close(done)
	p.connecting = nil
	if err != nil {
		p.connectErr = fmt.Errorf("kafka producer for %v: %w", p.brokers, err)
		return
	}
	p.idempotent.Store(p.config.Producer.Idempotent)
	p.async, p.connectErr = async, nil
	p.demuxed = make(chan struct{})
	go func() {
		defer close(p.demuxed)
		p.demux(async)
	}()
}

// newAsync creates the sarama producer. In IdempotenceAuto mode, when the
// brokers cannot give an idempotent producer its id, it logs a warning and
// creates a plain producer instead, and keeps to plain ones afterwards
// (brokers do not gain the API between two connections of one process).
// Only connect calls it, one attempt at a time, so p.config is not shared.
func (p *Producer) newAsync() (sarama.AsyncProducer, error) {
	async, err := sarama.NewAsyncProducer(p.brokers, p.config)
	if err == nil || !p.config.Producer.Idempotent || !idempotenceUnavailable(err) {
		return async, err
	}
	if p.mode == IdempotenceOn {
		return nil, fmt.Errorf("idempotent producer required (idempotence on) but the brokers cannot give one: %w", err)
	}
	p.log.Warn("kafka brokers cannot give an idempotent producer: results are produced without idempotence, so a producer retry may duplicate a result record (the engine deduplicates)",
		slog.Any("error", err))
	plain := *p.config
	plain.Producer.Idempotent = false
	p.config = &plain
	return sarama.NewAsyncProducer(p.brokers, p.config)
}

// idempotenceUnavailable reports whether err says that the brokers cannot
// give a producer id: the API is missing from the versions they announce,
// or they refuse it for want of the IDEMPOTENT_WRITE (cluster) permission.
// Other errors (brokers away) are no reason to give up idempotence.
func idempotenceUnavailable(err error) bool {
	return errors.Is(err, sarama.ErrUnsupportedVersion) || errors.Is(err, sarama.ErrClusterAuthorizationFailed) ||
		errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed)
}

// WithTokens makes every record carry "authorization: Bearer <token>",
// the token minted for the record's executor id. Call it before the first
// send.
func (p *Producer) WithTokens(token func(executorID string) (string, error)) {
	p.headers = func(executorID string) ([]sarama.RecordHeader, error) {
		t, err := token(executorID)
		if err != nil {
			return nil, err
		}
		return []sarama.RecordHeader{{Key: []byte(AuthorizationHeader), Value: []byte("Bearer " + t)}}, nil
	}
}

// batchWaiter counts the acknowledgements one send still waits for.
type batchWaiter struct {
	mu        sync.Mutex
	remaining int
	err       error
	done      chan struct{}
	// gaveUp: the send returned before every record was acknowledged (its
	// context ended); a record failing later has no one to tell.
	gaveUp bool
}

// ack counts one record's outcome. The send's error is the first refusal
// for good (domain.ErrResultRejected) if any, else the first error.
func (w *batchWaiter) ack(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && (w.err == nil || errors.Is(err, domain.ErrResultRejected) && !errors.Is(w.err, domain.ErrResultRejected)) {
		w.err = err
	}
	w.remaining--
	if w.remaining == 0 {
		close(w.done)
	}
}

// record is one record to send, for an executor id (for its token), with
// headers of its own (a result's trace context) after the token's.
type record struct {
	topic, key, executorID string
	value                  []byte
	headers                []sarama.RecordHeader
	// keepKey: the record is a copy (dead-lettered), whose key is rawKey
	// as read, nil for a null key, and whose nil value stays null.
	keepKey bool
	rawKey  []byte
}

// send produces records and returns nil once every one is acknowledged. On
// error, some may have been written: resending is safe, since consumers
// deduplicate.
func (p *Producer) send(ctx context.Context, records []record) error {
	p.isolation.RLock()
	defer p.isolation.RUnlock()
	return p.produce(ctx, records)
}

// sendAlone produces one record as the only one in sarama's pipeline, once
// every record in flight before it has been acknowledged or failed: a
// broker refuses a whole record batch when one of its records is too
// large, and sarama batches the records of concurrent sends together, so
// only a record sent alone is judged on its own size.
func (p *Producer) sendAlone(ctx context.Context, rec record) error {
	p.isolation.Lock()
	defer p.isolation.Unlock()
	for {
		p.inflightMu.Lock()
		n, drained := p.inflight, p.drained
		p.inflightMu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-drained:
		case <-ctx.Done():
			return fmt.Errorf("produce alone: waiting for %d records in flight: %w", n, context.Cause(ctx))
		}
	}
	return p.produce(ctx, []record{rec})
}

func (p *Producer) produce(ctx context.Context, records []record) error {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]*sarama.ProducerMessage, len(records))
	w := &batchWaiter{remaining: len(records), done: make(chan struct{})}
	for i, r := range records {
		msgs[i] = &sarama.ProducerMessage{Topic: r.topic, Key: sarama.StringEncoder(r.key), Value: sarama.ByteEncoder(r.value), Metadata: w}
		if r.keepKey {
			msgs[i].Key, msgs[i].Value = nullable(r.rawKey), nullable(r.value)
		}
		if p.headers != nil {
			headers, err := p.headers(r.executorID)
			if err != nil {
				return fmt.Errorf("token for %s: %w", r.executorID, err)
			}
			msgs[i].Headers = headers
		}
		msgs[i].Headers = append(msgs[i].Headers, r.headers...)
	}
	if err := p.enqueue(ctx, msgs); err != nil {
		return err
	}
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		w.mu.Lock()
		w.gaveUp = true
		w.mu.Unlock()
		return fmt.Errorf("produce: waiting for acknowledgements: %w", context.Cause(ctx))
	}
}

// nullable encodes b, or nothing (a null key or value) when b is nil:
// a nil ByteEncoder would be written as empty, not null.
func nullable(b []byte) sarama.Encoder {
	if b == nil {
		return nil
	}
	return sarama.ByteEncoder(b)
}

// entered counts a record handed to sarama; left, one acknowledged or failed.
func (p *Producer) entered() {
	p.inflightMu.Lock()
	p.inflight++
	p.inflightMu.Unlock()
}

func (p *Producer) left() {
	p.inflightMu.Lock()
	defer p.inflightMu.Unlock()
	p.inflight--
	if p.inflight == 0 {
		close(p.drained)
		p.drained = make(chan struct{})
	}
}

func (p *Producer) enqueue(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errors.New("kafka producer closed")
	}
	async, err := p.connected(ctx)
	if err != nil {
		return err
	}
	for _, msg := range msgs {
		p.entered()
		select {
		case async.Input() <- msg:
		case <-ctx.Done():
			p.left()
			return fmt.Errorf("produce to %s: %w", msg.Topic, context.Cause(ctx))
		}
	}
	return nil
}

// demux routes acknowledgements and errors to the sends waiting for them.
func (p *Producer) demux(async sarama.AsyncProducer) {
	successes, failures := async.Successes(), async.Errors()
	for successes != nil || failures != nil {
		select {
		case msg, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			msg.Metadata.(*batchWaiter).ack(nil)
			p.left()
		case perr, ok := <-failures:
			if !ok {
				failures = nil
				continue
			}
			w := perr.Msg.Metadata.(*batchWaiter)
			err := produceError(perr)
			w.ack(err)
			p.left()
			w.mu.Lock()
			orphan := w.gaveUp
			w.mu.Unlock()
			if orphan && p.closing.Load() {
				p.orphaned(err)
			}
		}
	}
}

// orphaned records a failure no send waits for any more.
func (p *Producer) orphaned(err error) {
	p.orphansMu.Lock()
	defer p.orphansMu.Unlock()
	if p.orphans == 0 {
		p.firstOrphan = err
	}
	p.orphans++
}

// produceError wraps a record the brokers (or sarama, before sending it)
// refused. Refusals that sending the same record again cannot overcome wrap
// domain.ErrResultTooLarge (the record is larger than the brokers or sarama
// take) or domain.ErrResultRejected (the brokers call it invalid); anything
// else (a corrupt transfer, a misconfiguration, brokers away) is transient.
func produceError(perr *sarama.ProducerError) error {
	var configErr sarama.ConfigurationError
	switch {
	case errors.As(perr.Err, &configErr) && strings.Contains(string(configErr), "larger than"), // sarama's own size check
		errors.Is(perr.Err, sarama.ErrMessageSizeTooLarge), errors.Is(perr.Err, sarama.ErrMessageSetSizeTooLarge):
		return fmt.Errorf("produce to %s: %w: %w", perr.Msg.Topic, domain.ErrResultTooLarge, perr.Err)
	case errors.Is(perr.Err, sarama.ErrInvalidRecord), errors.Is(perr.Err, sarama.ErrInvalidMessageSize):
		return fmt.Errorf("produce to %s: %w: %w", perr.Msg.Topic, domain.ErrResultRejected, perr.Err)
	}
	return fmt.Errorf("produce to %s: %w", perr.Msg.Topic, perr.Err)
}

// Close flushes what is in flight and closes the producer, after waiting
// for a connection attempt in progress, and returns once its goroutines
// have stopped. Its error reports the records it could not flush: those
// whose sends had stopped waiting for them, which no one else is told of.
// Sends after Close fail.
func (p *Producer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.closing.Store(true)
	p.connectMu.Lock()
	attempt := p.connecting
	p.connectMu.Unlock()
	if attempt != nil {
		<-attempt
	}
	p.connectMu.Lock()
	async, demuxed := p.async, p.demuxed
	p.connectMu.Unlock()
	if async == nil {
		return nil
	}
	err := async.Close()
	<-demuxed
	p.orphansMu.Lock()
	if p.orphans > 0 {
		err = errors.Join(err, fmt.Errorf("%d records in flight failed to flush, the first: %w", p.orphans, p.firstOrphan))
	}
	p.orphansMu.Unlock()
	if err != nil {
		return fmt.Errorf("close kafka producer for %v: %w", p.brokers, err)
	}
	return nil
}
