package service

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	ggrpc "google.golang.org/grpc"

	grpcadapter "github.com/gamelan-go/executor/internal/adapters/grpc"
	kafkaadapter "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/adapters/rest"
	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/pkg/executor"
)

// adapters builds the adapters the configuration selects, only those, and
// shares what the ports of one technology share: the in-process engine, the
// gRPC connection to the engine and the push server. Its cleanup closes what
// it opened, in reverse order.
type adapters struct {
	cfg           config.Config
	log           *slog.Logger
	executorTypes []string // every hosted type, for the tokens' claims
	closers       []closer

	memory *memory.Engine

	tokensBuilt bool
	tokens      *security.Minter // nil when no JWT secret is set

	grpcConn   *ggrpc.ClientConn
	grpcWatch  *grpcadapter.ConnectionWatch
	grpcPush   *grpcadapter.PushServer
	grpcSource *grpcadapter.TaskSource
	grpcSink   *grpcadapter.ResultSink

	kafkaConf     *kafkaadapter.Config
	kafkaProducer *kafkaadapter.Producer
	kafkaSink     *kafkaadapter.ResultSink
	kafkaSource   *kafkaadapter.TaskSource

	restClient *rest.Client
	restSource *rest.Intake
}

func newAdapters(cfg config.Config, executors []executor.Executor, log *slog.Logger) (*adapters, func()) {
	a := &adapters{cfg: cfg, log: log}
	for _, ex := range executors {
		a.executorTypes = append(a.executorTypes, ex.Descriptor().Type)
	}
	return a, func() {
		for i := len(a.closers) - 1; i >= 0; i-- {
			if err := a.closers[i].close(); err != nil {
				log.Error("close "+a.closers[i].name, slog.Any("error", err))
			}
		}
	}
}

// closer closes one adapter when the service stops; its error is logged.
type closer struct {
	name  string
	close func() error
}

// onClose adds what to close, in reverse order of opening.
func (a *adapters) onClose(name string, close func() error) {
	a.closers = append(a.closers, closer{name: name, close: close})
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

// selectTaskSource builds the task source of one transport kind, serving
// the given executor types. Each transport adapter adds one case.
func selectTaskSource(a *adapters, kind string, served []domain.Registration) (ports.TaskSource, error) {
	switch kind {
	case "memory":
		return a.memoryEngine().TaskSource(), nil
	case "grpc":
		source, _, err := a.grpcIntake(served)
		return source, err
	case "kafka":
		return a.kafkaTaskSource(served)
	case "rest":
		return a.restIntake(served)
	}
	return nil, fmt.Errorf("task transport %q is not built into this service", kind)
}

// selectResultSink builds the result sink of one transport kind.
func selectResultSink(a *adapters, kind string, served []domain.Registration) (ports.ResultSink, error) {
	switch kind {
	case "memory":
		return a.memoryEngine().ResultSink(), nil
	case "grpc":
		_, sink, err := a.grpcIntake(served)
		return sink, err
	case "kafka":
		return a.kafkaResultSink()
	case "rest":
		return a.restResultSink()
	}
	return nil, fmt.Errorf("result transport %q is not built into this service", kind)
}

// selectRegistrar builds the registrar REGISTRAR names.
func selectRegistrar(a *adapters) (ports.Registrar, error) {
	switch a.cfg.Registrar {
	case "memory":
		return a.memoryEngine().Registrar(), nil
	case "grpc":
		conn, err := a.grpcConnection()
		if err != nil {
			return nil, err
		}
		return grpcadapter.NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Watching(a.grpcWatch), nil
	case "kafka":
		producer, err := a.kafkaProducerFor()
		if err != nil {
			return nil, err
		}
		cfg, err := a.kafkaConfig()
		return kafkaadapter.NewRegistrar(producer, cfg), err
	case "http":
		client, err := a.engineClient()
		if err != nil {
			return nil, err
		}
		return rest.NewRegistrar(client, a.cfg.TaskTimeout()), nil
	}
	return nil, fmt.Errorf("registrar %q is not built into this service", a.cfg.Registrar)
}

// selectHeartbeater builds the heartbeater REGISTRAR names.
func selectHeartbeater(a *adapters) (ports.Heartbeater, error) {
	switch a.cfg.Registrar {
	case "memory":
		return a.memoryEngine().Heartbeater(), nil
	case "grpc":
		conn, err := a.grpcConnection()
		if err != nil {
			return nil, err
		}
		return grpcadapter.NewHeartbeater(gamelanv1.NewExecutorServiceClient(conn)), nil
	case "kafka":
		producer, err := a.kafkaProducerFor()
		if err != nil {
			return nil, err
		}
		cfg, err := a.kafkaConfig()
		return kafkaadapter.NewHeartbeater(producer, cfg), err
	case "http":
		client, err := a.engineClient()
		if err != nil {
			return nil, err
		}
		return rest.NewHeartbeater(client), nil
	}
	return nil, fmt.Errorf("heartbeater %q is not built into this service", a.cfg.Registrar)
}

// endpoint is where the engine reaches the executor types served over kind.
func (a *adapters) endpoint(kind string) string {
	switch kind {
	case "grpc":
		if a.cfg.GRPCAdvertisedEndpoint != "" {
			return a.cfg.GRPCAdvertisedEndpoint
		}
		return advertisedAddress(a.grpcPush.Addr())
	case "rest":
		return a.restEndpoint()
	case "kafka":
		return a.cfg.KafkaTasksTopic // Kafka executors are reached through the tasks topic
	}
	return kind
}

// plan is the runtime's view of the deployment: the transports in use and
// the executor types each one serves.
type plan struct {
	transports []app.Transport
	hosted     []app.Hosted
}

// planTransports assigns each executor type its transport kind, builds one
// source and one sink per kind in use, and registers each type with the
// endpoint of its transport.
func planTransports(a *adapters, cfg config.Config, executors []executor.Executor) (plan, error) {
	host := hostName()
	var kinds []string
	served := make(map[string][]domain.Registration)
	for _, ex := range executors {
		kind := transportKind(cfg, ex.Descriptor())
		if served[kind] == nil {
			kinds = append(kinds, kind)
		}
		served[kind] = append(served[kind], registration(cfg, ex, kind, host))
	}
	var p plan
	for _, kind := range kinds {
		source, err := selectTaskSource(a, kind, served[kind])
		if err != nil {
			return plan{}, err
		}
		sink, err := selectResultSink(a, kind, served[kind])
		if err != nil {
			return plan{}, err
		}
		p.transports = append(p.transports, app.Transport{Name: kind, Source: source, Sink: sink})
	}
	for _, ex := range executors {
		kind := transportKind(cfg, ex.Descriptor())
		for _, reg := range served[kind] {
			if reg.Descriptor.Type == ex.Descriptor().Type {
				reg.Endpoint = a.endpoint(kind)
				p.hosted = append(p.hosted, app.Hosted{Executor: ex, Registration: reg, Transport: kind})
			}
		}
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
// and test engine), else the type's declared communication type, else (a
// type that declares none) TRANSPORT.
func transportKind(cfg config.Config, desc domain.Descriptor) string {
	if kind, ok := cfg.TransportOverrides[desc.Type]; ok {
		return kind
	}
	if cfg.Transport == "memory" {
		return "memory"
	}
	if desc.CommunicationType != "" {
		return strings.ToLower(string(desc.CommunicationType))
	}
	return cfg.Transport
}

// registration is what the engine learns about one executor type served
// over a transport kind. Executor ids are NAME-type; types served over gRPC
// or REST, where every replica has its own endpoint, add the instance id
// (INSTANCE_ID, else the host name) so that replicas do not overwrite each
// other. Kafka replicas share one logical id, like they share one group.
func registration(cfg config.Config, ex executor.Executor, kind, host string) domain.Registration {
	desc := ex.Descriptor().WithDefaults()
	communication := desc.CommunicationType
	id := cfg.Name + "-" + desc.Type
	shared := false
	switch kind {
	case "grpc":
		communication = domain.CommunicationGRPC
		id += "-" + instanceID(cfg, host)
	case "kafka":
		communication = domain.CommunicationKafka
		shared = true // replicas share the group and the logical id
	case "rest":
		communication = domain.CommunicationREST
		id += "-" + instanceID(cfg, host)
	}
	return domain.Registration{
		ExecutorID:        id,
		Descriptor:        desc,
		CommunicationType: communication,
		Endpoint:          kind,
		Metadata: map[string]string{
			"name":    cfg.Name,
			"version": cfg.Version,
			"host":    host,
		},
		Shared: shared,
	}
}

// instanceID is INSTANCE_ID, else the host name reduced to the characters
// executor ids allow.
func instanceID(cfg config.Config, host string) string {
	if cfg.InstanceID != "" {
		return cfg.InstanceID
	}
	id := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '-'
	}, host)
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

func hostName() string {
	host, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return host
}

// runtimeConfig maps the service configuration onto the runtime's.
func runtimeConfig(cfg config.Config, observer app.Observer) app.Config {
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
		Observer:           observer,
	}
}

func newRuntime(cfg config.Config, p plan, registrar ports.Registrar, heartbeater ports.Heartbeater, metrics *telemetry.Metrics, log *slog.Logger) (*app.Runtime, error) {
	return app.New(runtimeConfig(cfg, metrics), p.hosted, p.transports, registrar, heartbeater, log)
}
