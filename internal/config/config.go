// Package config reads the executor service's configuration from the
// environment into typed, checked sections.
//
// Config holds what every deployment configures (identity, routing, tokens,
// the runtime, probes, logs); each transport has a section of its own (GRPC,
// Kafka, REST here; a fork's transport declares its own the same way), and
// Load reads them all at once. The environment is read exactly once, through
// the getenv function the caller passes (cmd/ passes os.Getenv; tests pass a
// map lookup). An empty variable counts as unset and takes its default,
// because getenv cannot tell the two apart. Every variable, its default and
// its meaning are declared in the struct tags (env, envDefault, doc), and
// its rule in its type: the types of values.go parse themselves, so a field
// of type Int[AtLeast1] cannot hold 0. Variables lists them in order, so
// that the README table and the tests share that one source; hand-written
// rules (Check) are only those that span several variables.
//
// A bad value is reported as one line naming the variable, the value and what
// is allowed, for example
//
//	GAMELAN_EXECUTOR_THREAD_POOL_SIZE="-3": must be a whole number of at least 1
//
// When several variables are wrong, the first in order is reported. Secrets
// (JWT_SECRET, KAFKA_SASL_PASSWORD) are never shown, neither in errors nor
// in String or LogValue.
package config

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"
)

// Config is what every deployment of the executor service configures.
// Each field is set from the environment variable named by its env tag, or
// from its envDefault when the variable is empty or unset. The values that
// depend on the host (InstanceID) stay empty and are resolved by the caller.
type Config struct {
	Name       Identifier `env:"GAMELAN_EXECUTOR_NAME" envDefault:"executor" doc:"Service name, the prefix of executor ids: 1-64 characters of a-z, A-Z, 0-9, _ and -."`
	Version    Text       `env:"GAMELAN_EXECUTOR_VERSION" envDefault:"1.0.0" doc:"Version sent to the engine at registration."`
	InstanceID Identifier `env:"GAMELAN_EXECUTOR_INSTANCE_ID" envDefault:"" doc:"Identity of this process among its replicas; empty derives it from the host name. Same characters as NAME."`

	// The kinds of Transport, Registrar and TransportOverrides are checked
	// by the service against its transport table, which also fills in the
	// {transports} and {registrars} of their docs.
	Transport          Kind      `env:"GAMELAN_EXECUTOR_TRANSPORT" envDefault:"grpc" doc:"Default task transport for executor types that do not declare one: {transports}."`
	Registrar          Kind      `env:"GAMELAN_EXECUTOR_REGISTRAR" envDefault:"grpc" doc:"Control plane used to register, heartbeat and unregister: {registrars}."`
	TransportOverrides Overrides `env:"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES" envDefault:"" doc:"Per-type transport as comma-separated type=kind pairs, e.g. calculate-tax=kafka,order-validator=grpc; wins over the type's declared communication type. Empty means none."`
	// RateLimits is checked against the hosted types by CheckHostedTypes.
	RateLimits   RateLimits `env:"GAMELAN_EXECUTOR_RATE_LIMITS" envDefault:"" doc:"Per-type rate limits as comma-separated type=RATE/s[:BURST] entries (RATE/m for per minute), e.g. payment-processor=50/s:10; wins over the type's declared rate limit; type=off (or 0) removes it. BURST defaults to one second's worth (at least 1). Beyond the limit, push and REST answer 503 with a retry hint and pull transports wait. Empty means none."`
	EnabledTypes Names      `env:"GAMELAN_EXECUTOR_ENABLED_TYPES" envDefault:"" doc:"Comma-separated executor types this deployment serves; empty serves every hosted type."`

	JWTSecret        SigningKey             `env:"GAMELAN_EXECUTOR_JWT_SECRET" envDefault:"" doc:"HS256 key of at least 32 bytes for tokens to and from the engine; empty means no tokens. Never logged."`
	JWTIssuer        Text                   `env:"GAMELAN_EXECUTOR_JWT_ISSUER" envDefault:"gamelan-executor" doc:"Issuer of the tokens this service signs."`
	JWTAudience      Text                   `env:"GAMELAN_EXECUTOR_JWT_AUDIENCE" envDefault:"gamelan-engine" doc:"Audience of the tokens this service signs."`
	JWTTTL           Seconds[TokenLifetime] `env:"GAMELAN_EXECUTOR_JWT_TTL_SECONDS" envDefault:"300" doc:"Lifetime of the tokens this service signs, in seconds, from 30 to 86400."`
	JWTInboundIssuer Text                   `env:"GAMELAN_EXECUTOR_JWT_INBOUND_ISSUER" envDefault:"gamelan-engine" doc:"Issuer that inbound tokens (the engine's, on push calls) must carry."`
	// JWTInboundAudience is the audience inbound tokens must name: a token
	// signed with the shared secret for another service is not for us.
	JWTInboundAudience string  `env:"GAMELAN_EXECUTOR_JWT_INBOUND_AUDIENCE" envDefault:"gamelan-executor" doc:"Audience that inbound tokens (push calls, REST tasks) must name, the one the engine's tokens for executors carry; empty skips the check."`
	JWTInbound         Inbound `env:"GAMELAN_EXECUTOR_JWT_INBOUND" envDefault:"required" doc:"Whether inbound tasks must carry a valid token when JWT_SECRET is set: required or off (accepts unauthenticated tasks, logged loudly)."`

	HeartbeatInterval  Seconds[UpToAYear]   `env:"GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS" envDefault:"10" doc:"Seconds between heartbeats; must be below HEARTBEAT_TIMEOUT_SECONDS."`
	HeartbeatTimeout   Seconds[UpToAYear]   `env:"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS" envDefault:"60" doc:"Seconds after which the engine forgets an executor that stopped heartbeating (the engine's setting, not sent to it): the heartbeat interval must stay below it."`
	ReregisterInterval Seconds[ZeroToAYear] `env:"GAMELAN_EXECUTOR_REREGISTER_INTERVAL_SECONDS" envDefault:"60" doc:"Seconds between re-registrations even while heartbeats succeed, because an engine may answer heartbeats from executors it forgot; 0 disables periodic re-registration. A remade connection to the engine, or an answer saying it does not know an executor, re-registers at once anyway."`

	ThreadPoolSize     Int[AtLeast1]      `env:"GAMELAN_EXECUTOR_THREAD_POOL_SIZE" envDefault:"50" doc:"Tasks run at once across all executor types."`
	QueueSize          Int[AtLeast0]      `env:"GAMELAN_EXECUTOR_QUEUE_SIZE" envDefault:"1000" doc:"Admitted tasks that may wait for a worker; beyond it intake stops."`
	TaskTimeout        Seconds[UpToAYear] `env:"GAMELAN_EXECUTOR_TASK_TIMEOUT_SECONDS" envDefault:"300" doc:"Deadline in seconds of tasks that carry no timeout."`
	ShutdownTimeout    Seconds[UpToAYear] `env:"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS" envDefault:"30" doc:"Seconds the drain waits for running tasks on shutdown before cancelling them."`
	ResultFlushTimeout Seconds[UpToAYear] `env:"GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS" envDefault:"10" doc:"Seconds results still undelivered after the drain may take to be acknowledged."`
	// TerminationGracePeriod and PreStop describe the orchestrator's stop,
	// which this process cannot observe: they are read only to warn at
	// start-up when the drain and flush cannot fit (ShutdownBudget).
	TerminationGracePeriod Seconds[ZeroToAYear] `env:"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS" envDefault:"0" doc:"The orchestrator's grace period from the start of the stop to the kill (Kubernetes terminationGracePeriodSeconds; set it from the same value). When set, start-up warns if PRE_STOP_SECONDS + SHUTDOWN_TIMEOUT_SECONDS + RESULT_FLUSH_TIMEOUT_SECONDS exceed it. 0 means unknown: no check."`
	PreStop                Seconds[ZeroToAYear] `env:"GAMELAN_EXECUTOR_PRE_STOP_SECONDS" envDefault:"0" doc:"Seconds the orchestrator waits before it sends the stop signal (a preStop hook), which its grace period counts too; only read by the start-up check of TERMINATION_GRACE_PERIOD_SECONDS."`
	ResultOutboxSize       Int[AtLeast1]        `env:"GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE" envDefault:"1000" doc:"Results that may wait for delivery per transport."`
	DedupeCapacity         Int[AtLeast1]        `env:"GAMELAN_EXECUTOR_DEDUPE_CAPACITY" envDefault:"10000" doc:"Finished tasks remembered to drop duplicate deliveries."`

	// AdaptiveConcurrency is checked against the hosted types by
	// CheckHostedTypes, and applied by the service (AdaptiveFor).
	AdaptiveConcurrency Names `env:"GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY" envDefault:"" doc:"Comma-separated executor types whose concurrency limit adapts between 1 and their MaxConcurrentTasks to their handlers' latency and retryable failures, or all; empty leaves it to each type's descriptor (off unless the descriptor turns it on)."`

	HTTPHost Text           `env:"GAMELAN_EXECUTOR_HTTP_HOST" envDefault:"0.0.0.0" doc:"Address the HTTP server for probes and metrics binds to."`
	HTTPPort Int[PortRange] `env:"GAMELAN_EXECUTOR_HTTP_PORT" envDefault:"8090" doc:"Port of the HTTP server for /q/health and /q/metrics (8090, beside an engine on 8080); 0 picks a free port."`

	Profiling bool `env:"GAMELAN_EXECUTOR_PROFILING" envDefault:"false" doc:"Serve Go's profiles (CPU, heap, allocations, goroutines, blocking, execution trace) under /debug/pprof/ on the HTTP server. Off by default: profiles show internals and cost CPU while they are taken; never expose them beyond the operators."`

	LogLevel  LogLevel  `env:"GAMELAN_EXECUTOR_LOG_LEVEL" envDefault:"info" doc:"Lowest level logged: debug, info, warn or error."`
	LogFormat LogFormat `env:"GAMELAN_EXECUTOR_LOG_FORMAT" envDefault:"json" doc:"Log line format: json or text."`

	PaymentGatewayDelay Delay `env:"PAYMENT_GATEWAY_DELAY" envDefault:"2s" doc:"Simulated gateway latency of the example payment-processor, as a Go duration of at least 0."`
}

// Check applies the rules that span several variables of Config.
func (c *Config) Check() []Problem {
	if c.HeartbeatInterval >= c.HeartbeatTimeout {
		timeout, _ := c.HeartbeatTimeout.MarshalText()
		return []Problem{{
			Variable: "GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS",
			Rule:     fmt.Sprintf("must be below GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS (%s)", timeout),
		}}
	}
	return nil
}

// ShutdownBudget compares the time a stop may take with the orchestrator's
// grace period: need is PRE_STOP_SECONDS + SHUTDOWN_TIMEOUT_SECONDS +
// RESULT_FLUSH_TIMEOUT_SECONDS, because the grace period starts with the
// preStop hook, then the drain and the flush run one after the other. fits
// is false only when the grace period is known (not 0) and shorter than
// need: the orchestrator would then kill the process mid-drain or
// mid-flush, losing the results of tasks it ran. need leaves out the few
// seconds of closing connections and unregistering; keep a margin.
func (c Config) ShutdownBudget() (need, grace time.Duration, fits bool) {
	need = c.PreStop.Duration() + c.ShutdownTimeout.Duration() + c.ResultFlushTimeout.Duration()
	grace = c.TerminationGracePeriod.Duration()
	return need, grace, grace == 0 || need <= grace
}

// CheckHostedTypes reports, as one line naming the variable, the first type in
// TRANSPORT_OVERRIDES, RATE_LIMITS or ENABLED_TYPES that is not among hosted, the executor
// types this binary registers. Load cannot check this because only the caller
// knows the hosted types.
func (c Config) CheckHostedTypes(hosted []string) error {
	for _, typ := range slices.Sorted(maps.Keys(c.TransportOverrides)) {
		if !slices.Contains(hosted, typ) {
			overrides, _ := c.TransportOverrides.MarshalText()
			return fmt.Errorf("GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES=%q: type %q is not hosted; hosted types: %s",
				overrides, typ, strings.Join(hosted, ", "))
		}
	}
	for _, typ := range slices.Sorted(maps.Keys(c.RateLimits)) {
		if !slices.Contains(hosted, typ) {
			limits, _ := c.RateLimits.MarshalText()
			return fmt.Errorf("GAMELAN_EXECUTOR_RATE_LIMITS=%q: type %q is not hosted; hosted types: %s",
				limits, typ, strings.Join(hosted, ", "))
		}
	}
	for _, typ := range c.EnabledTypes {
		if !slices.Contains(hosted, typ) {
			return fmt.Errorf("GAMELAN_EXECUTOR_ENABLED_TYPES=%q: type %q is not hosted; hosted types: %s",
				strings.Join(c.EnabledTypes, ","), typ, strings.Join(hosted, ", "))
		}
	}
	return c.checkAdaptiveTypes(hosted)
}

// adaptAll is the value of ADAPTIVE_CONCURRENCY that names every type.
const adaptAll = "all"

// checkAdaptiveTypes reports a type in ADAPTIVE_CONCURRENCY that is not
// hosted, or "all" beside other types (which would say two things).
func (c Config) checkAdaptiveTypes(hosted []string) error {
	list := strings.Join(c.AdaptiveConcurrency, ",")
	if slices.Contains(c.AdaptiveConcurrency, adaptAll) {
		if len(c.AdaptiveConcurrency) > 1 {
			return fmt.Errorf("GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY=%q: %q names every type and must stand alone", list, adaptAll)
		}
		return nil
	}
	for _, typ := range c.AdaptiveConcurrency {
		if !slices.Contains(hosted, typ) {
			return fmt.Errorf("GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY=%q: type %q is not hosted; hosted types: %s",
				list, typ, strings.Join(hosted, ", "))
		}
	}
	return nil
}

// AdaptiveFor reports whether ADAPTIVE_CONCURRENCY turns adaptive
// concurrency on for the executor type typ: listed, or "all". A type it
// leaves out keeps what its descriptor says.
func (c Config) AdaptiveFor(typ string) bool {
	return slices.Contains(c.AdaptiveConcurrency, adaptAll) || slices.Contains(c.AdaptiveConcurrency, typ)
}

// TypeEnabled reports whether this deployment serves the executor type typ:
// every type when ENABLED_TYPES is empty, else only the listed ones.
func (c Config) TypeEnabled(typ string) bool {
	return len(c.EnabledTypes) == 0 || slices.Contains(c.EnabledTypes, typ)
}

// String renders every variable of Config as NAME="value" on one line, in
// order, with secrets redacted. fmt's %v, %+v and %s use it.
func (c Config) String() string { return "config{" + Show(c) + "}" }

// GoString makes %#v print String too, so that no fmt verb shows a secret.
func (c Config) GoString() string { return c.String() }

// LogValue renders every variable of Config as an attribute keyed by its
// name, with secrets redacted.
func (c Config) LogValue() slog.Value { return LogValue(c) }
