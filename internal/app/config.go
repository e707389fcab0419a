package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// Config tunes the Runtime. Zero fields take the defaults listed.
type Config struct {
	// Workers is the number of tasks run at once across all types (50).
	Workers int
	// QueueSize is how many admitted tasks may wait for a worker. Offer
	// refuses beyond Workers+QueueSize; 0 admits a task only when a worker
	// is free. It has no default: the service passes QUEUE_SIZE.
	QueueSize int
	// DefaultTaskTimeout applies to tasks that carry no timeout (5m).
	DefaultTaskTimeout time.Duration
	// DrainTimeout bounds how long Stop waits for admitted tasks before
	// cancelling them (30s).
	DrainTimeout time.Duration
	// FlushTimeout bounds how long Stop waits, after the drain, for results
	// still unacknowledged (10s).
	FlushTimeout time.Duration
	// CallTimeout bounds each call to the engine: register, heartbeat,
	// unregister, one result batch (10s).
	CallTimeout time.Duration
	// HeartbeatInterval is the mean time between heartbeats, jittered by
	// 10% (10s).
	HeartbeatInterval time.Duration
	// ReregisterInterval re-registers every type this often even when
	// heartbeats succeed, because an engine may answer heartbeats from
	// executors it forgot (1m). Negative disables it.
	ReregisterInterval time.Duration
	// RegisterBackoff paces registration retries at start-up.
	RegisterBackoff domain.Backoff
	// ResultBackoff paces result redelivery.
	ResultBackoff domain.Backoff
	// OutboxSize is the backlog of results waiting for delivery at which a
	// transport's intake pauses (1000): its Offer refuses and its
	// AwaitCapacity waits until the backlog falls below it. Tasks admitted
	// before may still add their results, so the backlog is bounded by
	// OutboxSize plus Workers and QueueSize.
	OutboxSize int
	// ResultBatchSize bounds the results sent in one Deliver call (100).
	ResultBatchSize int
	// ResultSenders is the number of concurrent Deliver calls per transport (4).
	ResultSenders int
	// DedupeCapacity is how many finished tasks are remembered (10000).
	DedupeCapacity int
	// Observer receives the runtime's events for metrics (none if nil).
	Observer Observer
}

func (c Config) withDefaults() Config {
	setDefault(&c.Workers, 50)
	setDefault(&c.DefaultTaskTimeout, 5*time.Minute)
	setDefault(&c.DrainTimeout, 30*time.Second)
	setDefault(&c.FlushTimeout, 10*time.Second)
	setDefault(&c.CallTimeout, 10*time.Second)
	setDefault(&c.HeartbeatInterval, 10*time.Second)
	setDefault(&c.ReregisterInterval, time.Minute)
	setDefault(&c.RegisterBackoff, domain.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2})
	setDefault(&c.ResultBackoff, domain.Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2})
	setDefault(&c.OutboxSize, 1000)
	setDefault(&c.ResultBatchSize, 100)
	setDefault(&c.ResultSenders, 4)
	setDefault(&c.DedupeCapacity, 10000)
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

func (c Config) validate() error {
	var errs []error
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("workers %d: must be at least 1", c.Workers))
	}
	if c.QueueSize < 0 {
		errs = append(errs, fmt.Errorf("queue size %d: must not be negative", c.QueueSize))
	}
	if c.OutboxSize < 1 || c.ResultBatchSize < 1 || c.ResultSenders < 1 || c.DedupeCapacity < 1 {
		errs = append(errs, errors.New("outbox size, result batch size, result senders and dedupe capacity must be at least 1"))
	}
	for name, d := range map[string]time.Duration{
		"default task timeout": c.DefaultTaskTimeout, "drain timeout": c.DrainTimeout,
		"flush timeout": c.FlushTimeout, "call timeout": c.CallTimeout, "heartbeat interval": c.HeartbeatInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must not be negative", name, d))
		}
	}
	return errors.Join(errs...)
}
