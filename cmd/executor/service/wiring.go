package service

import (
	"context"
	"log/slog"
	"time"

	kafkaadapter "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/adapters/rest"
	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/health"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// wiring is what the transports of the table are built from: the settings,
// and the resources Wire built once for all of them. A resource nothing in
// the plan uses is nil.
type wiring struct {
	settings *settings
	log      *slog.Logger
	tokens   *security.Minter // nil: no JWT secret
	inbound  authenticate     // nil: inbound tasks are not authenticated
	grpcTLS  grpcTLS
	engine   *engineConn            // the gRPC connection to the engine
	kafka    *kafkaadapter.Config   // the Kafka clients' configuration
	producer *kafkaadapter.Producer // the process's one Kafka producer
	registry *rest.Client           // the client of the engine's REST registry
	memory   *memory.Backend        // the in-process engine
	probes   *health.Probes         // the checks gRPC health services answer from
}

func newWiring(s *settings, log *slog.Logger, tokens *security.Minter, inbound authenticate, t grpcTLS,
	engine *engineConn, kafka *kafkaadapter.Config, producer *kafkaadapter.Producer, registry *rest.Client, mem *memory.Backend,
	probes *health.Probes) *wiring {
	return &wiring{settings: s, log: log, tokens: tokens, inbound: inbound, grpcTLS: t,
		engine: engine, kafka: kafka, producer: producer, registry: registry, memory: mem, probes: probes}
}

// closing closes one resource when the service stops, logging a failure.
func closing(log *slog.Logger, name string, close func() error) {
	if err := close(); err != nil {
		log.Error("close "+name, slog.Any("error", err))
	}
}

// sourceCloseTimeout bounds how long closing a source waits for calls in
// progress (the push server's, the REST intake's) and for leaving a consumer
// group.
const sourceCloseTimeout = 5 * time.Second

// closingSource is the cleanup of a transport's task source. The runtime
// closes every source itself once it has settled every delivery or given up
// at its deadline (app.Runtime.Run), since Settle is honoured only until
// Close; this cleanup, which runs after the runtime, closes the sources of a
// runtime that never ran (one that could not be built). Close is idempotent,
// so after a run it finds the source closed.
func closingSource(log *slog.Logger, name string, source ports.TaskSource) func() {
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), sourceCloseTimeout)
		defer cancel()
		closing(log, name, func() error { return source.Close(ctx) })
	}
}

// runtimeConfig maps the settings onto the runtime's configuration.
func runtimeConfig(s *settings, observer app.Observer) app.Config {
	reregister := s.ReregisterInterval.Duration()
	if reregister == 0 {
		reregister = -1 // 0 disables periodic re-registration
	}
	cfg := app.Config{
		Workers:            int(s.ThreadPoolSize),
		QueueSize:          int(s.QueueSize),
		DefaultTaskTimeout: s.TaskTimeout.Duration(),
		DrainTimeout:       s.ShutdownTimeout.Duration(),
		FlushTimeout:       s.ResultFlushTimeout.Duration(),
		CallTimeout:        min(10*time.Second, s.HeartbeatInterval.Duration()),
		HeartbeatInterval:  s.HeartbeatInterval.Duration(),
		ReregisterInterval: reregister,
		OutboxSize:         int(s.ResultOutboxSize),
		DedupeCapacity:     int(s.DedupeCapacity),
		Observer:           observer,
	}
	if s.tracing != nil {
		cfg.Tracer, cfg.Propagator = s.tracing.Tracer, s.tracing.Propagator
	}
	return cfg
}

func newRuntime(s *settings, d deployment, cp controlPlane, metrics *telemetry.Metrics, log *slog.Logger) (*app.Runtime, error) {
	observeConsumerLag(d, metrics)
	observeDeadLetters(d, metrics)
	return app.New(runtimeConfig(s, metrics), d.hosted, d.transports, cp.registrar, cp.heartbeater, log)
}

// lagReporter is a task source that knows its consumer lag (the Kafka
// source).
type lagReporter interface {
	ConsumerLag() []telemetry.PartitionLag
}

// deadLetterReporter is a task source that writes a dead-letter topic
// (the Kafka source).
type deadLetterReporter interface {
	DeadLetters() []telemetry.DeadLetters
}

// observeConsumerLag has the metrics read the consumer lag of the sources
// that report one, at each scrape.
func observeConsumerLag(d deployment, metrics *telemetry.Metrics) {
	if lag := fromSources(d, lagReporter.ConsumerLag); lag != nil {
		metrics.ObserveConsumerLag(lag)
	}
}

// observeDeadLetters has the metrics read the dead-letter counts of the
// sources that keep them, at each scrape.
func observeDeadLetters(d deployment, metrics *telemetry.Metrics) {
	if counts := fromSources(d, deadLetterReporter.DeadLetters); counts != nil {
		metrics.ObserveKafkaDeadLetters(counts)
	}
}

// fromSources returns a function that gathers what report reads from every
// task source of d that is an R, or nil when none is.
func fromSources[R, T any](d deployment, report func(R) []T) func() []T {
	var reporters []R
	for _, t := range d.transports {
		if r, ok := t.Source.(R); ok {
			reporters = append(reporters, r)
		}
	}
	if len(reporters) == 0 {
		return nil
	}
	return func() []T {
		var all []T
		for _, r := range reporters {
			all = append(all, report(r)...)
		}
		return all
	}
}

// givenDeployment serves every executor type of the plan through the given
// ports, in place of the table's transports.
func givenDeployment(p *plan, given Ports) deployment {
	d := deployment{hosted: p.hosted}
	for _, kind := range p.kinds {
		d.transports = append(d.transports, app.Transport{Name: kind, Source: given.Source, Sink: given.Sink})
	}
	return d
}

func givenControlPlane(given Ports) controlPlane {
	return controlPlane{registrar: given.Registrar, heartbeater: given.Heartbeater}
}
