package service

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/internal/version"
	"github.com/gamelan-go/executor/pkg/executor"
)

// settings is the whole configuration of the service: what every
// deployment configures, and one section per transport of the table.
type settings struct {
	config.Config
	GRPC  config.GRPC
	REST  config.REST
	Kafka config.Kafka
	// tracing is set up by run from the OTEL_* variables, before the
	// runtime is built (off: its Tracer is nil).
	tracing *telemetry.Tracing
}

// transports is the one table of the ways this service talks to engines.
// Everything about a transport that is not in its adapter package is its
// entry: the kind that TRANSPORT, TRANSPORT_OVERRIDES and REGISTRAR name,
// its variables, the communication type of the executor types it serves,
// how it is built and what it shares. Configuration checks, routing,
// registration, the wiring and the README's table all read it. A fork adds
// a transport with its adapter package and one entry here (docs/forking.md).
var transports = []transport{
	{
		kind:          "grpc",
		about:         "grpc (the engine's ExecutorService at ENGINE_GRPC_TARGET; tasks pushed to this service's gRPC server, or pulled with GRPC_INTAKE)",
		communication: domain.CommunicationGRPC,
		perReplica:    true,
		section:       func(s *settings) any { return &s.GRPC },
		uses:          func(*settings) []string { return []string{"grpc"} },
		build:         buildGRPC,
		registrar:     grpcRegistrar,
	},
	{
		kind:          "kafka",
		about:         "kafka (the tasks and results topics; as a registrar, the registration, heartbeat and unregistration topics)",
		communication: domain.CommunicationKafka,
		shared:        true,
		section:       func(s *settings) any { return &s.Kafka },
		uses:          func(*settings) []string { return []string{"kafka"} },
		build:         buildKafka,
		registrar:     kafkaRegistrar,
	},
	{
		kind:          "rest",
		about:         "rest (tasks posted by the engine to this service's REST intake; as a registrar, the engine's REST registry at ENGINE_URL)",
		communication: domain.CommunicationREST,
		perReplica:    true,
		section:       func(s *settings) any { return &s.REST },
		uses:          func(s *settings) []string { return []string{string(s.REST.ResultSink)} },
		build:         buildREST,
		registrar:     restRegistrar,
	},
	{
		kind:      "memory",
		about:     "memory (an in-process engine serving every type, for development and tests: nothing outside the process can reach it)",
		takesAll:  true,
		inProcess: true,
		uses:      func(*settings) []string { return []string{"memory"} },
		build:     buildMemory,
		registrar: memoryRegistrar,
	},
}

// registrarAliases are former names of registrar kinds, still accepted.
var registrarAliases = map[string]string{"http": "rest"}

// transport is one entry of the table.
type transport struct {
	kind  string
	about string // the kind and what it means, for the docs of the variables
	// communication is the communication type of the executor types it
	// serves unless TRANSPORT_OVERRIDES says otherwise, and the one it
	// registers them with; empty for a transport that keeps each type's own.
	communication domain.CommunicationType
	// takesAll: as TRANSPORT, it serves every type, whatever they declare.
	takesAll bool
	// inProcess: nothing outside the process talks to it (no tokens needed).
	inProcess bool
	// perReplica: each replica has its own endpoint, so executor ids end
	// with the instance id. shared: replicas share one logical executor id
	// (and the engine's view of it), as Kafka consumers share a group.
	perReplica, shared bool
	// section returns the transport's variables within the settings, or is
	// nil for a transport without variables.
	section func(*settings) any
	// uses lists the shared resources (wiring) the transport needs, by
	// kind: they are built only when something uses them.
	uses func(*settings) []string
	// build makes the task source and the result sink serving the given
	// types, and says how the engine reaches them; cleanup closes what it
	// opened. Nil for a transport that only registers.
	build func(w *wiring, served []domain.Registration) (built, func(), error)
	// registrar makes the control plane, when REGISTRAR names the kind;
	// nil for a transport that cannot register.
	registrar func(w *wiring) (controlPlane, error)
}

// built is one transport, built.
type built struct {
	source   ports.TaskSource
	sink     ports.ResultSink
	endpoint string // where the engine reaches the types it serves
}

// controlPlane registers the executor types and sends their heartbeats.
type controlPlane struct {
	registrar   ports.Registrar
	heartbeater ports.Heartbeater
}

// sections lists the variables of every transport, in table order, for
// config.Load and the README's table.
func (s *settings) sections() []any {
	var sections []any
	for _, t := range transports {
		if t.section != nil {
			sections = append(sections, t.section(s))
		}
	}
	return sections
}

// lookup returns the entry of kind.
func lookup(kind string) (transport, bool) {
	i := slices.IndexFunc(transports, func(t transport) bool { return t.kind == kind })
	if i < 0 {
		return transport{}, false
	}
	return transports[i], true
}

// kinds lists the table's kinds that have the given role.
func kinds(role func(transport) bool) []string {
	var out []string
	for _, t := range transports {
		if role(t) {
			out = append(out, t.kind)
		}
	}
	return out
}

func servesTasks(t transport) bool { return t.build != nil }
func registers(t transport) bool   { return t.registrar != nil }

// plan is the deployment, decided from the settings and the hosted types
// before anything is built: which transport serves each type, and what the
// control plane is.
type plan struct {
	settings  *settings
	hosted    []app.Hosted
	served    map[string][]domain.Registration // by kind, in table order of use
	kinds     []string                         // the transports in use, in order of first use
	registrar string
	host      string
}

// checkKinds checks every kind the configuration names against the table,
// and replaces a former registrar name by its current one. An error names
// the variable.
func (s *settings) checkKinds() error {
	if err := checkKind("GAMELAN_EXECUTOR_TRANSPORT", string(s.Transport), servesTasks); err != nil {
		return err
	}
	for _, typ := range slices.Sorted(maps.Keys(s.TransportOverrides)) {
		if err := checkKind("GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", string(s.TransportOverrides[typ]), servesTasks); err != nil {
			return fmt.Errorf("%w (type %q)", err, typ)
		}
	}
	if current, ok := registrarAliases[string(s.Registrar)]; ok {
		s.Registrar = config.Kind(current)
	}
	return checkKind("GAMELAN_EXECUTOR_REGISTRAR", string(s.Registrar), registers)
}

// newPlan routes each executor type to its transport.
func newPlan(s *settings, executors []executor.Executor) (*plan, error) {
	return planWith(s, executors, func(desc domain.Descriptor) (transport, error) { return route(s, desc) })
}

// newGivenPlan serves every executor type through ports the caller gives
// (component tests), as one transport that keeps each type's declaration.
func newGivenPlan(s *settings, executors []executor.Executor) (*plan, error) {
	return planWith(s, executors, func(domain.Descriptor) (transport, error) { return transport{kind: "given"}, nil })
}

func planWith(s *settings, executors []executor.Executor, route func(domain.Descriptor) (transport, error)) (*plan, error) {
	p := &plan{settings: s, served: make(map[string][]domain.Registration), registrar: string(s.Registrar), host: hostName()}
	build := version.Get()
	for _, ex := range executors {
		t, err := route(ex.Descriptor())
		if err != nil {
			return nil, err
		}
		reg := registration(s, ex.Descriptor().WithDefaults(), t, p.host, build)
		if p.served[t.kind] == nil {
			p.kinds = append(p.kinds, t.kind)
		}
		p.served[t.kind] = append(p.served[t.kind], reg)
		h := app.Hosted{Executor: ex, Registration: reg, Transport: t.kind, AdaptiveConcurrency: s.AdaptiveFor(ex.Descriptor().Type)}
		h.OverrideRateLimit, h.RateLimit = rateLimitOverride(s, ex.Descriptor().Type)
		p.hosted = append(p.hosted, h)
	}
	return p, nil
}

// checkKind reports a kind the table does not have in the given role.
func checkKind(variable, kind string, role func(transport) bool) error {
	if t, ok := lookup(kind); ok && role(t) {
		return nil
	}
	return fmt.Errorf("%s=%q: must be one of %s", variable, kind, strings.Join(slices.Sorted(slices.Values(kinds(role))), ", "))
}

// route picks the transport serving an executor type: its entry in
// TRANSPORT_OVERRIDES, else every type when TRANSPORT is a transport that
// takes all (memory), else the transport of the type's declared
// communication type, else (a type that declares none) TRANSPORT.
func route(s *settings, desc domain.Descriptor) (transport, error) {
	if kind, ok := s.TransportOverrides[desc.Type]; ok {
		t, _ := lookup(string(kind))
		return t, nil
	}
	if t, _ := lookup(string(s.Transport)); t.takesAll || desc.CommunicationType == "" {
		return t, nil
	}
	for _, t := range transports {
		if t.communication == desc.CommunicationType && t.build != nil {
			return t, nil
		}
	}
	return transport{}, fmt.Errorf("executor type %q declares communication type %q, which no transport of this service serves (%s); "+
		"add one, or route the type with GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", desc.Type, desc.CommunicationType, strings.Join(kinds(servesTasks), ", "))
}

// uses reports whether anything in the plan needs the shared resources of
// kind: a transport in use that lists it, or the control plane.
func (p *plan) uses(kind string) bool {
	if p.registrar == kind {
		return true
	}
	for _, k := range p.kinds {
		t, _ := lookup(k)
		if slices.Contains(t.uses(p.settings), kind) {
			return true
		}
	}
	return false
}

// reachesOutside reports whether the service talks to anything outside its
// process, and so has a use for tokens.
func (p *plan) reachesOutside() bool {
	for _, kind := range append([]string{p.registrar}, p.kinds...) {
		if t, _ := lookup(kind); !t.inProcess {
			return true
		}
	}
	return false
}

// executorTypes lists every hosted type, for the tokens' claims.
func (p *plan) executorTypes() []string {
	types := make([]string, len(p.hosted))
	for i, h := range p.hosted {
		types[i] = h.Registration.Descriptor.Type
	}
	return types
}

// Registration metadata keys naming the build of the binary (internal/version),
// beside "version", which is GAMELAN_EXECUTOR_VERSION.
const (
	MetadataBuildVersion = "buildVersion"
	MetadataBuildCommit  = "buildCommit"
)

// registration is what the engine learns about one executor type served by
// a transport. Executor ids are NAME-type, and NAME-type-INSTANCE for a
// transport whose replicas each have an endpoint, so that replicas do not
// overwrite each other; Kafka replicas share one logical id, like they
// share one group. The endpoint is filled in once the transport is built.
//
// The metadata's "version" is GAMELAN_EXECUTOR_VERSION, the service's own
// version as its operators name it (also the tokens' executor_version
// claim); it is not replaced by the binary's. The build the binary was made
// from, stamped at build time (internal/version), goes beside it under keys
// of its own, so that an engine sees both which service answers and which
// build of the template runs it.
func registration(s *settings, desc domain.Descriptor, t transport, host string, build version.Info) domain.Registration {
	id := string(s.Name) + "-" + desc.Type
	if t.perReplica {
		id += "-" + instanceID(s, host)
	}
	communication := desc.CommunicationType
	if t.communication != "" {
		communication = t.communication
	}
	metadata := map[string]string{"name": string(s.Name), "version": string(s.Version), "host": host,
		MetadataBuildVersion: build.Version, MetadataBuildCommit: build.Commit}
	return domain.Registration{
		ExecutorID:        id,
		Descriptor:        desc,
		CommunicationType: communication,
		Endpoint:          t.kind,
		Metadata:          metadata,
		Shared:            t.shared,
	}
}

// deployment is what the runtime runs: the transports in use and the
// executor types each serves, registered with their endpoints.
type deployment struct {
	transports []app.Transport
	hosted     []app.Hosted
}

// newTransports builds every transport in use, in order of first use, and
// registers each type with the endpoint of its transport. Its cleanup
// closes them in reverse.
func newTransports(p *plan, w *wiring) (deployment, func(), error) {
	var d deployment
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	endpoints := make(map[string]string)
	for _, kind := range p.kinds {
		t, _ := lookup(kind)
		b, closeIt, err := t.build(w, p.served[kind])
		if err != nil {
			cleanup()
			return deployment{}, nil, fmt.Errorf("%s transport: %w", kind, err)
		}
		cleanups = append(cleanups, closeIt)
		endpoints[kind] = b.endpoint
		d.transports = append(d.transports, app.Transport{Name: kind, Source: b.source, Sink: b.sink})
	}
	for _, h := range p.hosted {
		h.Registration.Endpoint = endpoints[h.Transport]
		d.hosted = append(d.hosted, h)
	}
	return d, cleanup, nil
}

// newControlPlane builds the registrar and heartbeater REGISTRAR names.
func newControlPlane(p *plan, w *wiring) (controlPlane, error) {
	t, _ := lookup(p.registrar)
	return t.registrar(w)
}

// instanceID is INSTANCE_ID, else the host name reduced to the characters
// executor ids allow.
func instanceID(s *settings, host string) string {
	if s.InstanceID != "" {
		return string(s.InstanceID)
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
