package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
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
	config  *sarama.Config
	async   sarama.AsyncProducer // nil until connected
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
}

// NewProducer returns a producer for the brokers; it connects on first use.
func NewProducer(cfg Config) (*Producer, error) {
	sc, err := cfg.producerConfig()
	if err != nil {
		return nil, err
	}
	return &Producer{brokers: cfg.Brokers, config: sc}, nil
}

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
	async, err := sarama.NewAsyncProducer(p.brokers, p.config)
	p.connectMu.Lock()
	defer p.connectMu.Unlock()
	defer close(done)
	p.connecting = nil
	if err != nil {
		p.connectErr = fmt.Errorf("kafka producer for %v: %w", p.brokers, err)
		return
	}
	p.async, p.connectErr = async, nil
	go p.demux(async)
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
}

func (w *batchWaiter) ack(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.err == nil {
		w.err = err
	}
	w.remaining--
	if w.remaining == 0 {
		close(w.done)
	}
}

// record is one record to send, for an executor id (for its token).
type record struct {
	topic, key, executorID string
	value                  []byte
}

// send produces records and returns nil once every one is acknowledged. On
// error, some may have been written: resending is safe, since consumers
// deduplicate.
func (p *Producer) send(ctx context.Context, records []record) error {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]*sarama.ProducerMessage, len(records))
	w := &batchWaiter{remaining: len(records), done: make(chan struct{})}
	for i, r := range records {
		msgs[i] = &sarama.ProducerMessage{Topic: r.topic, Key: sarama.StringEncoder(r.key), Value: sarama.ByteEncoder(r.value), Metadata: w}
		if p.headers != nil {
			headers, err := p.headers(r.executorID)
			if err != nil {
				return fmt.Errorf("token for %s: %w", r.executorID, err)
			}
			msgs[i].Headers = headers
		}
	}
	if err := p.enqueue(ctx, msgs); err != nil {
		return err
	}
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		return fmt.Errorf("produce: waiting for acknowledgements: %w", context.Cause(ctx))
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
		select {
		case async.Input() <- msg:
		case <-ctx.Done():
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
		case perr, ok := <-failures:
			if !ok {
				failures = nil
				continue
			}
			perr.Msg.Metadata.(*batchWaiter).ack(fmt.Errorf("produce to %s: %w", perr.Msg.Topic, perr.Err))
		}
	}
}

// Close flushes what is in flight and closes the producer, after waiting
// for a connection attempt in progress. Sends after Close fail.
func (p *Producer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.connectMu.Lock()
	attempt := p.connecting
	p.connectMu.Unlock()
	if attempt != nil {
		<-attempt
	}
	p.connectMu.Lock()
	defer p.connectMu.Unlock()
	if p.async == nil {
		return nil
	}
	return p.async.Close()
}
