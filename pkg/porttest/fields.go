package porttest

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// Field names a piece of data that a transport may be unable to carry. A
// harness lists the fields its transport lacks in Unsupported, and the suites
// then do not compare them; everything not listed must arrive intact. The
// identity of a task or result (run id, node id, attempt), a result's status
// and its error code and message, and a registration's executor id and type
// are always required.
type Field string

// Task fields, checked by the TaskSource suite.
const (
	FieldTaskID             Field = "Task.TaskID"
	FieldTaskNodeName       Field = "Task.NodeName"
	FieldTaskNodeType       Field = "Task.NodeType"
	FieldTaskExecutorType   Field = "Task.ExecutorType"
	FieldTaskExecutorID     Field = "Task.ExecutorID"
	FieldTaskExecutionToken Field = "Task.ExecutionToken"
	FieldTaskIdempotencyKey Field = "Task.IdempotencyKey"
	FieldTaskContext        Field = "Task.Context"
	FieldTaskConfiguration  Field = "Task.Configuration"
	// FieldTaskTimeout: carried at whole seconds (timeout_seconds) suffices.
	FieldTaskTimeout Field = "Task.Timeout"
	// FieldTaskScheduledAt: compared at millisecond precision.
	FieldTaskScheduledAt Field = "Task.ScheduledAt"
	// FieldCancelReason: the reason given with an engine-side cancellation.
	FieldCancelReason Field = "Cancel.Reason"
)

// Result fields, checked by the ResultSink suite.
const (
	FieldResultTaskID          Field = "Result.TaskID"
	FieldResultExecutionToken  Field = "Result.ExecutionToken"
	FieldResultExecutorID      Field = "Result.ExecutorID"
	FieldResultOutput          Field = "Result.Output"
	FieldResultErrorStackTrace Field = "Result.Error.StackTrace"
	FieldResultErrorContext    Field = "Result.Error.Context"
	FieldResultErrorRetryable  Field = "Result.Error.Retryable"
	FieldResultCompletedAt     Field = "Result.CompletedAt" // millisecond precision
	FieldResultDuration        Field = "Result.Duration"    // millisecond precision
)

// Registration fields, checked by the Registrar suite.
const (
	// FieldRegistrationCommunicationType is the transport serving the type
	// (Registration.CommunicationType).
	FieldRegistrationCommunicationType Field = "Registration.CommunicationType"
	// FieldRegistrationDescriptorCommunicationType is the type's declared
	// transport (Registration.Descriptor.CommunicationType), which most
	// wires do not carry beside the serving one.
	FieldRegistrationDescriptorCommunicationType Field = "Registration.Descriptor.CommunicationType"
	FieldRegistrationEndpoint                    Field = "Registration.Endpoint"
	// FieldRegistrationMetadata: the suite requires its entries to be
	// present; an adapter may add entries of its own.
	FieldRegistrationMetadata           Field = "Registration.Metadata"
	FieldRegistrationSupportedNodeTypes Field = "Registration.Descriptor.SupportedNodeTypes"
	FieldRegistrationMaxConcurrentTasks Field = "Registration.Descriptor.MaxConcurrentTasks"
	FieldRegistrationVersion            Field = "Registration.Descriptor.Version"
)

// Heartbeat fields, checked by the Heartbeater suite.
const (
	// FieldHeartbeatCurrentTasks is listed by a transport whose heartbeat
	// carries no figures at all (the REST registry's heartbeat is a POST
	// without a body); the suite then checks only that the engine received
	// heartbeats of the executor, not which one came last.
	FieldHeartbeatCurrentTasks   Field = "Heartbeat.CurrentTasks"
	FieldHeartbeatCompletedTasks Field = "Heartbeat.CompletedTasks"
	FieldHeartbeatFailedTasks    Field = "Heartbeat.FailedTasks"
	FieldHeartbeatStatus         Field = "Heartbeat.Status"
)

// fieldSet is a harness's Unsupported list.
type fieldSet []Field

// supports reports whether the transport carries f.
func (unsupported fieldSet) supports(f Field) bool { return !slices.Contains(unsupported, f) }

// equalJSON asserts that two values are equal as JSON carries them: numbers
// compare as float64, and nil and empty maps are the same. This is how every
// wire of the engine (protobuf Struct, JSON) represents task variables and
// outputs, so the memory transport, which keeps ints as ints, compares equal
// to the gRPC one.
func equalJSON(t *testing.T, want, got any, field Field) bool {
	t.Helper()
	return assert.Equal(t, jsonValue(t, want), jsonValue(t, got), "field %s", field)
}

func jsonValue(t *testing.T, v any) any {
	t.Helper()
	if m, ok := v.(map[string]any); ok && len(m) == 0 {
		return map[string]any{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("porttest: %v cannot be compared as JSON: %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("porttest: JSON round trip of %v: %v", v, err)
	}
	return out
}

// equalMillis asserts two instants are equal at millisecond precision,
// whatever their locations.
func equalMillis(t *testing.T, want, got time.Time, field Field) bool {
	t.Helper()
	return assert.Equal(t, want.UnixMilli(), got.UnixMilli(), "field %s: want %s, got %s", field, want, got)
}
