package domain

import (
	"fmt"
	"regexp"
)

// CommunicationType is how the engine reaches an executor type.
type CommunicationType string

// The communication types of the transports this repository ships; a
// transport a fork adds declares its own.
const (
	CommunicationGRPC  CommunicationType = "GRPC"
	CommunicationKafka CommunicationType = "KAFKA"
	CommunicationREST  CommunicationType = "REST"
)

// Defaults applied by Descriptor.WithDefaults.
const (
	DefaultMaxConcurrentTasks = 10
	DefaultExecutorVersion    = "1.0.0"
)

// communicationPattern is the shape of a communication type: the
// transports of the service decide which ones they serve (GRPC, KAFKA and
// REST, or a fork's own).
var communicationPattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,31}$`)

// maxIDBytes bounds an id, as the Gamelan engine does.
const maxIDBytes = 255

// ValidID reports whether s is acceptable to the engine as an id: letters,
// digits, '_' and '-', at most 255 characters (the engine's
// ^[a-zA-Z0-9_-]{1,255}$). It runs for several ids of every task, so it is a
// loop over bytes rather than a regular expression, which costs ten times
// as much.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > maxIDBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idByte(s[i]) {
			return false
		}
	}
	return true
}

// idByte reports whether b may appear in an id.
func idByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-'
}

// Descriptor declares an executor type to the runtime and to the engine.
type Descriptor struct {
	// Type is the executor type, for example "calculate-tax". Required.
	Type string
	// CommunicationType is the transport the type is served on unless the
	// deployment overrides it. Defaults to GRPC.
	CommunicationType CommunicationType
	// MaxConcurrentTasks bounds how many tasks of this type run at once.
	// Defaults to DefaultMaxConcurrentTasks.
	MaxConcurrentTasks int
	// SupportedNodeTypes lists the node types this executor handles, for
	// routing tasks that name a node type rather than an executor type.
	SupportedNodeTypes []string
	// Version is sent at registration. Defaults to DefaultExecutorVersion.
	Version string
	// AdaptiveConcurrency lets the runtime move the type's concurrency limit
	// between 1 and MaxConcurrentTasks: it grows while handler latency stays
	// near its observed minimum and the type uses its limit, and shrinks
	// when latency or retryable failures rise (the rule is documented in
	// internal/app/adaptive.go). Off by default: MaxConcurrentTasks is then
	// the fixed limit. GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY turns it on
	// from the deployment.
	AdaptiveConcurrency bool
	// RateLimit bounds how many tasks of this type start per second; nil
	// means unlimited. GAMELAN_EXECUTOR_RATE_LIMITS overrides it per type.
	RateLimit *RateLimit
}

// WithDefaults returns d with zero fields set to their defaults.
func (d Descriptor) WithDefaults() Descriptor {
	if d.CommunicationType == "" {
		d.CommunicationType = CommunicationGRPC
	}
	if d.MaxConcurrentTasks == 0 {
		d.MaxConcurrentTasks = DefaultMaxConcurrentTasks
	}
	if d.Version == "" {
		d.Version = DefaultExecutorVersion
	}
	if d.RateLimit != nil {
		l := d.RateLimit.WithDefaults() // a copy: the caller's value is not changed
		d.RateLimit = &l
	}
	return d
}

// Validate reports the first problem with d, after defaults are applied.
func (d Descriptor) Validate() error {
	if !ValidID(d.Type) {
		return fmt.Errorf("executor type %q: must be 1-255 letters, digits, '_' or '-'", d.Type)
	}
	if !communicationPattern.MatchString(string(d.CommunicationType)) {
		return fmt.Errorf("executor type %q: communication type %q is not a name such as GRPC, KAFKA or REST (upper-case letters, digits and _)", d.Type, d.CommunicationType)
	}
	if d.MaxConcurrentTasks < 1 {
		return fmt.Errorf("executor type %q: max concurrent tasks %d is below 1", d.Type, d.MaxConcurrentTasks)
	}
	if d.RateLimit != nil {
		if err := d.RateLimit.Validate(); err != nil {
			return fmt.Errorf("executor type %q: rate limit: %w", d.Type, err)
		}
	}
	return nil
}

// Supports reports whether d handles tasks of the given node type: the node
// type is the executor type itself or one of its supported node types.
func (d Descriptor) Supports(nodeType string) bool {
	if nodeType == "" {
		return false
	}
	if nodeType == d.Type {
		return true
	}
	for _, t := range d.SupportedNodeTypes {
		if t == nodeType {
			return true
		}
	}
	return false
}

// Registration is what the engine learns about one hosted executor type.
type Registration struct {
	// ExecutorID is unique per executor type and deployment; the engine
	// addresses the executor by it.
	ExecutorID string
	Descriptor Descriptor
	// CommunicationType is the transport actually serving the type, after
	// deployment overrides.
	CommunicationType CommunicationType
	// Endpoint is where the engine reaches the executor (host:port for gRPC).
	Endpoint string
	// Metadata carries name, version and host, and anything an adapter adds.
	Metadata map[string]string
	// Shared reports that replicas of the service register this same
	// executor id (Kafka executors: one logical executor per consumer
	// group). A replica that stops does not unregister a shared id, since
	// the others still serve it; the engine ages it out when the last one
	// stops heartbeating.
	Shared bool
}

// Heartbeat is one report of an executor's load and health.
type Heartbeat struct {
	ExecutorID     string
	CurrentTasks   int
	CompletedTasks int
	FailedTasks    int
	// Status is "HEALTHY", or "DRAINING" while the service shuts down.
	Status string
	// Load is how busy the type is, from 0 to 1: the larger of its slots
	// in use (running / MaxConcurrentTasks) and, with a rate limit, the
	// share of the limit used since the last heartbeat (tasks admitted /
	// (rate x interval)).
	Load float64
}

// Heartbeat statuses.
const (
	HealthHealthy  = "HEALTHY"
	HealthDraining = "DRAINING"
)
