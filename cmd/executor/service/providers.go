package service

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/executor"
)

// adapters builds the adapters the configuration selects, only those, and
// shares what the ports of one technology share (the in-process engine now;
// a gRPC connection or Kafka clients as those transports land). Its cleanup
// closes what it opened, in reverse order.
type adapters struct {
	cfg     config.Config
	log     *slog.Logger
	memory  *memory.Engine
	closers []func()
}

func newAdapters(cfg config.Config, log *slog.Logger) (*adapters, func()) {
	a := &adapters{cfg: cfg, log: log}
	return a, func() {
		for i := len(a.closers) - 1; i >= 0; i-- {
			a.closers[i]()
		}
	}
}

// memoryEngine returns the in-process engine that every memory adapter of
// this process shares.
func (a *adapters) memoryEngine() *memory.Engine {
	if a.memory == nil {
		a.memory = memory.NewEngine()
		a.log.Warn("using the in-memory engine: nothing outside this process can send tasks")
	}
	return a.memory
}

// selectTaskSource builds the task source of one transport kind. Each
// transport adapter adds one case.
func selectTaskSource(a *adapters, kind string) (ports.TaskSource, error) {
	switch kind {
	case "memory":
		return a.memoryEngine().TaskSource(), nil
	}
	return nil, fmt.Errorf("task transport %q is not built into this service", kind)
}

// selectResultSink builds the result sink of one transport kind.
func selectResultSink(a *adapters, kind string) (ports.ResultSink, error) {
	switch kind {
	case "memory":
		return a.memoryEngine().ResultSink(), nil
	}
	return nil, fmt.Errorf("result transport %q is not built into this service", kind)
}

// selectRegistrar builds the registrar REGISTRAR names.
func selectRegistrar(a *adapters) (ports.Registrar, error) {
	switch a.cfg.Registrar {
	case "memory":
		return a.memoryEngine().Registrar(), nil
	}
	return nil, fmt.Errorf("registrar %q is not built into this service", a.cfg.Registrar)
}

// selectHeartbeater builds the heartbeater REGISTRAR names.
func selectHeartbeater(a *adapters) (ports.Heartbeater, error) {
	switch a.cfg.Registrar {
	case "memory":
		return a.memoryEngine().Heartbeater(), nil
	}
	return nil, fmt.Errorf("heartbeater %q is not built into this service", a.cfg.Registrar)
}

// plan is the runtime's view of the deployment: the transports in use and
// the executor types each one serves.
type plan struct {
	transports []app.Transport
	hosted     []app.Hosted
}

// planTransports assigns each executor type its transport kind and builds
// one source and one sink per kind in use.
func planTransports(a *adapters, cfg config.Config, executors []executor.Executor) (plan, error) {
	host := hostName()
	var p plan
	built := make(map[string]bool)
	for _, ex := range executors {
		kind := transportKind(cfg, ex.Descriptor())
		if !built[kind] {
			source, err := selectTaskSource(a, kind)
			if err != nil {
				return plan{}, err
			}
			sink, err := selectResultSink(a, kind)
			if err != nil {
				return plan{}, err
			}
			p.transports = append(p.transports, app.Transport{Name: kind, Source: source, Sink: sink})
			built[kind] = true
		}
		p.hosted = append(p.hosted, app.Hosted{Executor: ex, Registration: registration(cfg, ex, kind, host), Transport: kind})
	}
	return p, nil
}

// planWithPorts serves every executor type through the given ports.
func planWithPorts(cfg config.Config, executors []executor.Executor, given Ports) plan {
	const kind = "given"
	p := plan{transports: []app.Transport{{Name: kind, Source: given.Source, Sink: given.Sink}}}
	host := hostName()
	for _, ex := range executors {
		p.hosted = append(p.hosted, app.Hosted{Executor: ex, Registration: registration(cfg, ex, kind, host), Transport: kind})
	}
	return p
}

func givenRegistrar(p Ports) ports.Registrar     { return p.Registrar }
func givenHeartbeater(p Ports) ports.Heartbeater { return p.Heartbeater }

// transportKind picks the transport serving an executor type: its entry in
// TRANSPORT_OVERRIDES, else every type in memory mode (the in-process dev
// and test engine), else the type's declared communication type, else
// TRANSPORT.
func transportKind(cfg config.Config, desc domain.Descriptor) string {
	if kind, ok := cfg.TransportOverrides[desc.Type]; ok {
		return kind
	}
	if cfg.Transport == "memory" {
		return "memory"
	}
	switch desc.CommunicationType {
	case domain.CommunicationGRPC:
		return "grpc"
	case domain.CommunicationKafka:
		return "kafka"
	case domain.CommunicationREST:
		return "rest"
	}
	return cfg.Transport
}

// registration is what the engine learns about one executor type served
// over a transport kind.
func registration(cfg config.Config, ex executor.Executor, kind, host string) domain.Registration {
	desc := ex.Descriptor().WithDefaults()
	communication := desc.CommunicationType
	switch kind {
	case "grpc":
		communication = domain.CommunicationGRPC
	case "kafka":
		communication = domain.CommunicationKafka
	case "rest":
		communication = domain.CommunicationREST
	}
	return domain.Registration{
		ExecutorID:        cfg.Name + "-" + desc.Type,
		CommunicationType: communication,
		Endpoint:          kind,
		Metadata: map[string]string{
			"name":    cfg.Name,
			"version": cfg.Version,
			"host":    host,
		},
	}
}

func hostName() string {
	host, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return host
}

// runtimeConfig maps the service configuration onto the runtime's.
func runtimeConfig(cfg config.Config) app.Config {
	reregister := cfg.ReregisterInterval()
	if reregister == 0 {
		reregister = -1 // 0 disables periodic re-registration
	}
	return app.Config{
		Workers:            cfg.ThreadPoolSize,
		QueueSize:          cfg.QueueSize,
		DefaultTaskTimeout: cfg.TaskTimeout(),
		DrainTimeout:       cfg.ShutdownTimeout(),
		FlushTimeout:       cfg.ResultFlushTimeout(),
		CallTimeout:        min(10*time.Second, cfg.HeartbeatInterval()),
		HeartbeatInterval:  cfg.HeartbeatInterval(),
		ReregisterInterval: reregister,
		OutboxSize:         cfg.ResultOutboxSize,
		DedupeCapacity:     cfg.DedupeCapacity,
	}
}

func newRuntime(cfg config.Config, p plan, registrar ports.Registrar, heartbeater ports.Heartbeater, log *slog.Logger) (*app.Runtime, error) {
	return app.New(runtimeConfig(cfg), p.hosted, p.transports, registrar, heartbeater, log)
}
