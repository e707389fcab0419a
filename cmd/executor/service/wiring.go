package service

import (
	"log/slog"
	"time"

	kafkaadapter "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/adapters/rest"
	"github.com/gamelan-go/executor/internal/app"
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
}

func newWiring(s *settings, log *slog.Logger, tokens *security.Minter, inbound authenticate, t grpcTLS,
	engine *engineConn, kafka *kafkaadapter.Config, producer *kafkaadapter.Producer, registry *rest.Client, mem *memory.Backend) *wiring {
	return &wiring{settings: s, log: log, tokens: tokens, inbound: inbound, grpcTLS: t,
		engine: engine, kafka: kafka, producer: producer, registry: registry, memory: mem}
}

// closing closes one resource when the service stops, logging a failure.
func closing(log *slog.Logger, name string, close func() error) {
	if err := close(); err != nil {
		log.Error("close "+name, slog.Any("error", err))
	}
}

// runtimeConfig maps the settings onto the runtime's configuration.
func runtimeConfig(s *settings, observer app.Observer) app.Config {
	reregister := s.ReregisterInterval.Duration()
	if reregister == 0 {
		reregister = -1 // 0 disables periodic re-registration
	}
	return app.Config{
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
}

func newRuntime(s *settings, d deployment, cp controlPlane, metrics *telemetry.Metrics, log *slog.Logger) (*app.Runtime, error) {
	return app.New(runtimeConfig(s, metrics), d.hosted, d.transports, cp.registrar, cp.heartbeater, log)
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
