package app

import (
	"errors"
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// Config tunes the Runtime. The fields the service configures (one
// GAMELAN_EXECUTOR_* variable each, whose default is in internal/config
// and nowhere else) are required; the internal knobs that no variable sets
// take the defaults listed when zero.
type Config struct {
	// Workers is the number of tasks run at once across all types. Required.
	Workers int
	// QueueSize is how many admitted tasks may wait for a worker. Offer
	// refuses beyond Workers+QueueSize; 0 admits a task only when a worker
	// is free.
	QueueSize int
	// DefaultTaskTimeout applies to tasks that carry no timeout. Required.
	DefaultTaskTimeout time.Duration
	// DrainTimeout bounds how long Stop waits for admitted tasks before
	// cancelling them. Required.
	DrainTimeout time.Duration
	// FlushTimeout bounds how long Stop waits, after the drain, for results
	// still unacknowledged. Required.
	FlushTimeout time.Duration
	// HeartbeatInterval is the mean time between heartbeats, jittered by
	// 10%. Required.
	HeartbeatInterval time.Duration
	// ReregisterInterval re-registers every type this often even when
	// heartbeats succeed, because an engine may answer heartbeats from
	// executors it forgot. Negative disables it; required otherwise.
	ReregisterInterval time.Duration
	// OutboxSize is the backlog of results waiting for delivery at which a
	// transport's intake pauses: its Offer refuses and its AwaitCapacity
	// waits until the backlog falls below it. Tasks admitted before may
	// still add their results, so the backlog is bounded by OutboxSize plus
	// Workers and QueueSize. Required.
	OutboxSize int
	// DedupeCapacity is how many finished tasks are remembered. Required.
	DedupeCapacity int

	// CallTimeout bounds each call to the engine: register, heartbeat,
	// unregister, one result batch (10s).
	CallTimeout time.Duration
	// RegisterBackoff paces registration retries at start-up (200ms to 10s).
	RegisterBackoff domain.Backoff
	// ResultBackoff paces result redelivery (50ms to 5s).
	ResultBackoff domain.Backoff
	// ResultBatchSize bounds the results sent in one Deliver call (100).
	ResultBatchSize int
	// ResultSenders is the number of concurrent Deliver calls per transport (4).
	ResultSenders int
	// Observer receives the runtime's events for metrics (none if nil).
	Observer Observer
	// Tracer starts the spans of every task (tracing.go); nil turns
	// tracing off, at no cost.
	Tracer trace.Tracer
	// Propagator reads the engine's trace context from each task and
	// writes the executor's into its result, when Tracer is set (W3C trace
	// context and baggage if nil).
	Propagator propagation.TextMapPropagator
}

// withDefaults fills in the internal knobs.
func (c Config) withDefaults() Config {
	setDefault(&c.CallTimeout, 10*time.Second)
	setDefault(&c.RegisterBackoff, domain.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2, Jitter: 0.2})
	setDefault(&c.ResultBackoff, domain.Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2})
	setDefault(&c.ResultBatchSize, 100)
	setDefault(&c.ResultSenders, 4)
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Tracer != nil && c.Propagator == nil {
		c.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
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
	if c.DedupeCapacity > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("dedupe capacity %d: must be at most %d", c.DedupeCapacity, math.MaxInt32))
	}
	for name, d := range map[string]time.Duration{
		"default task timeout": c.DefaultTaskTimeout, "drain timeout": c.DrainTimeout,
		"flush timeout": c.FlushTimeout, "call timeout": c.CallTimeout, "heartbeat interval": c.HeartbeatInterval,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be set and positive", name, d))
		}
	}
	if c.ReregisterInterval == 0 {
		errs = append(errs, errors.New("reregister interval: must be set (negative disables it)"))
	}
	return errors.Join(errs...)
}
