package grpc

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// asJSON is v as JSON carries it (numbers as float64), for comparing maps
// that went through a protobuf Struct.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(raw, &out))
	return out
}

func TestStatusMapping(t *testing.T) {
	for status, want := range map[domain.Status]gamelanv1.TaskStatus{
		domain.StatusCompleted: gamelanv1.TaskStatus_TASK_STATUS_COMPLETED,
		domain.StatusFailed:    gamelanv1.TaskStatus_TASK_STATUS_FAILED,
		domain.StatusCancelled: gamelanv1.TaskStatus_TASK_STATUS_CANCELLED,
		domain.StatusSkipped:   gamelanv1.TaskStatus_TASK_STATUS_SKIPPED,
	} {
		pr := resultToProto(domain.Result{RunID: "run", NodeID: "node", Status: status})
		assert.Equal(t, want, pr.GetStatus(), "status %s on the wire", status)
		assert.Equal(t, status, resultFromProto(pr).Status, "status %s back from the wire", status)
	}
	// Anything else is never sent as such (docs/protocol.md, section 3: only the four).
	pr := resultToProto(domain.Result{RunID: "run", NodeID: "node", Status: "RUNNING"})
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, pr.GetStatus(), "an unknown status")
}

func TestResultRoundTrip(t *testing.T) {
	completedAt := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	results := []domain.Result{
		{
			TaskID: "task-1", RunID: "run-1", NodeID: "node-1", Attempt: 2, ExecutionToken: "token-1",
			Status: domain.StatusCompleted, CompletedAt: completedAt,
			Output: map[string]any{"tax": 12.25, "count": 7, "currency": "EUR", "approved": true,
				"breakdown": map[string]any{"lines": []any{1, "two", map[string]any{"sku": "X"}}}, "none": nil},
		},
		{
			TaskID: "task-2", RunID: "run-1", NodeID: "node-2", Attempt: 1, ExecutionToken: "token-2",
			Status: domain.StatusFailed, CompletedAt: completedAt, Output: map[string]any{"partial": true},
			Error: &domain.ErrorInfo{Code: "INVALID_ORDER", Message: "no lines", StackTrace: "main.go:42",
				Context: map[string]any{"orderId": "ORDER-1", "limits": map[string]any{"max": 100}}, Retryable: true},
		},
		{
			TaskID: "task-3", RunID: "run-1", NodeID: "node-3", Attempt: 1, ExecutionToken: "token-3",
			Status: domain.StatusFailed, CompletedAt: completedAt,
			Error: &domain.ErrorInfo{Code: domain.CodeInvalidInput, Message: "amount is not a number", Retryable: false},
		},
		{
			TaskID: "task-4", RunID: "run-1", NodeID: "node-4", Attempt: 3, ExecutionToken: "token-4",
			Status: domain.StatusCancelled, CompletedAt: completedAt,
			Error: &domain.ErrorInfo{Code: domain.CodeCancelled, Message: "cancelled by the engine"},
		},
		{
			TaskID: "task-5", RunID: "run-1", NodeID: "node-5", Attempt: 1, ExecutionToken: "token-5",
			Status: domain.StatusSkipped, CompletedAt: completedAt,
		},
	}
	for _, want := range results {
		t.Run(string(want.Status)+"-"+want.NodeID, func(t *testing.T) {
			pr := resultToProto(want)
			got := resultFromProto(pr)
			assert.Equal(t, want.TaskID, got.TaskID)
			assert.Equal(t, want.RunID, got.RunID)
			assert.Equal(t, want.NodeID, got.NodeID)
			assert.Equal(t, want.Attempt, got.Attempt)
			assert.Equal(t, want.ExecutionToken, got.ExecutionToken)
			assert.Equal(t, want.Status, got.Status)
			assert.True(t, want.CompletedAt.Equal(got.CompletedAt), "CompletedAt %s, got %s", want.CompletedAt, got.CompletedAt)
			if want.Output == nil {
				assert.Nil(t, pr.GetOutput(), "no output on the wire")
			} else {
				assert.Equal(t, asJSON(t, want.Output), asJSON(t, got.Output), "Output")
			}
			if want.Error == nil {
				assert.Nil(t, pr.GetError(), "no error on the wire")
				assert.Nil(t, got.Error)
				return
			}
			require.NotNil(t, got.Error)
			assert.Equal(t, want.Error.Code, got.Error.Code)
			assert.Equal(t, want.Error.Message, got.Error.Message)
			assert.Equal(t, want.Error.StackTrace, got.Error.StackTrace)
			assert.Equal(t, want.Error.Retryable, got.Error.Retryable, "Retryable")
			assert.Equal(t, want.Error.Retryable, pr.GetError().GetContext().GetFields()[retryableKey].GetBoolValue(),
				"retryable in the error context on the wire")
			if want.Error.Context == nil {
				assert.Nil(t, got.Error.Context, "error context")
			} else {
				assert.Equal(t, asJSON(t, want.Error.Context), asJSON(t, got.Error.Context), "error context")
			}
		})
	}
}

func TestResultWithoutCompletionTimeIsStampedNow(t *testing.T) {
	before := time.Now()
	pr := resultToProto(domain.Result{RunID: "run", NodeID: "node", Status: domain.StatusCompleted})
	require.NotNil(t, pr.GetCompletedAt(), "completed_at is always set")
	at := pr.GetCompletedAt().AsTime()
	assert.False(t, at.Before(before.Truncate(time.Microsecond)), "completed_at %s is before the conversion (%s)", at, before)
	assert.WithinDuration(t, time.Now(), at, time.Minute)
}

// TestResultOutputThroughJSON checks that output values a Struct does not
// take directly (Go structs, time.Time, typed slices and maps) go through
// JSON and arrive as JSON would carry them, not dropped.
func TestResultOutputThroughJSON(t *testing.T) {
	type invoice struct {
		Total    float64  `json:"total"`
		Currency string   `json:"currency"`
		Lines    []string `json:"lines"`
	}
	issued := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	pr := resultToProto(domain.Result{
		RunID: "run", NodeID: "node", Status: domain.StatusCompleted,
		Output: map[string]any{
			"invoice": invoice{Total: 12.5, Currency: "EUR", Lines: []string{"a", "b"}},
			"issued":  issued,
			"counts":  []int{1, 2, 3},
			"rates":   map[string]float64{"standard": 0.25},
		},
	})
	fields := pr.GetOutput().GetFields()
	require.Len(t, fields, 4, "output fields: %v", pr.GetOutput())
	assert.Equal(t, map[string]any{"total": 12.5, "currency": "EUR", "lines": []any{"a", "b"}}, fields["invoice"].GetStructValue().AsMap())
	assert.Equal(t, issued.Format(time.RFC3339Nano), fields["issued"].GetStringValue())
	assert.Equal(t, []any{1.0, 2.0, 3.0}, fields["counts"].GetListValue().AsSlice())
	assert.Equal(t, map[string]any{"standard": 0.25}, fields["rates"].GetStructValue().AsMap())
}

// TestResultOutputNotJSONBecomesANote checks that an output JSON cannot
// hold (a channel, a function) is replaced by a note, in the output and in
// an error's context, instead of panicking or vanishing.
func TestResultOutputNotJSONBecomesANote(t *testing.T) {
	var pr *gamelanv1.TaskResult
	require.NotPanics(t, func() {
		pr = resultToProto(domain.Result{
			RunID: "run", NodeID: "node", Status: domain.StatusFailed,
			Output: map[string]any{"results": make(chan int), "ok": true},
			Error:  &domain.ErrorInfo{Code: "BOOM", Message: "boom", Context: map[string]any{"callback": func() {}}},
		})
	})
	note := pr.GetOutput().GetFields()["outputError"].GetStringValue()
	assert.Contains(t, note, "not representable as JSON", "note in the output: %v", pr.GetOutput())
	assert.Contains(t, pr.GetError().GetContext().GetFields()["outputError"].GetStringValue(), "not representable as JSON",
		"note in the error context: %v", pr.GetError().GetContext())
	assert.Equal(t, "BOOM", pr.GetError().GetCode(), "the error itself survives")
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, pr.GetStatus())
}

func TestTaskRoundTrip(t *testing.T) {
	want := domain.Task{
		TaskID: "task-1", RunID: "run-1", NodeID: "node-1", NodeName: "Calculate tax", NodeType: taxNodeType,
		Attempt: 2, ExecutionToken: "token-1",
		Context:       map[string]any{"orderId": "ORDER-1", "amount": 1234.5, "quantity": 3, "customer": map[string]any{"city": "Malmö"}, "items": []any{"a", 2}},
		Configuration: map[string]any{"region": "EU", "rates": map[string]any{"standard": 0.25}},
		Timeout:       90 * time.Second,
		ScheduledAt:   time.Date(2026, 1, 1, 0, 0, 0, 123_000_000, time.UTC),
	}
	pt, err := taskToProto(want)
	require.NoError(t, err)
	got := taskFromProto(pt)
	assert.Equal(t, want.TaskID, got.TaskID)
	assert.Equal(t, want.RunID, got.RunID)
	assert.Equal(t, want.NodeID, got.NodeID)
	assert.Equal(t, want.NodeName, got.NodeName)
	assert.Equal(t, want.NodeType, got.NodeType)
	assert.Equal(t, want.Attempt, got.Attempt)
	assert.Equal(t, want.ExecutionToken, got.ExecutionToken)
	assert.Equal(t, asJSON(t, want.Context), asJSON(t, got.Context), "Context")
	assert.Equal(t, asJSON(t, want.Configuration), asJSON(t, got.Configuration), "Configuration")
	assert.Equal(t, want.Timeout, got.Timeout)
	assert.True(t, want.ScheduledAt.Equal(got.ScheduledAt), "ScheduledAt %s, got %s", want.ScheduledAt, got.ScheduledAt)
	require.NoError(t, got.Validate())

	empty := taskFromProto(&gamelanv1.ExecutionTask{RunId: "run", NodeId: "node", Attempt: 1})
	assert.True(t, empty.ScheduledAt.IsZero(), "no scheduled_at")
	assert.Zero(t, empty.Timeout, "no timeout")
	assert.Empty(t, empty.Context)
	require.NoError(t, empty.Validate())
}

// TestTaskFromProtoRefusesOutOfRangeTimeouts checks that a negative or
// absurd timeout_seconds makes the task invalid (refused by the runtime
// with INVALID_TASK) rather than overflowing.
func TestTaskFromProtoRefusesOutOfRangeTimeouts(t *testing.T) {
	for _, seconds := range []int64{-1, 400 * 24 * 3600, 1 << 62} {
		task := taskFromProto(&gamelanv1.ExecutionTask{RunId: "run", NodeId: "node", Attempt: 1, TimeoutSeconds: seconds})
		require.ErrorIs(t, task.Validate(), domain.ErrInvalidTask, "timeout_seconds %d", seconds)
	}
}

func TestTaskFromPush(t *testing.T) {
	task := taskFromPush(&dispatcherpb.ExecutionRequest{
		RunId: "run", NodeId: "node", Attempt: 3, Token: "token", IdempotencyKey: "run:node:3",
		Variables: map[string]string{"amount": "12.5", "nested": "{a=1}"}, Signature: "c2ln",
	})
	assert.Equal(t, domain.Task{
		RunID: "run", NodeID: "node", Attempt: 3, ExecutionToken: "token", IdempotencyKey: "run:node:3",
		Context: map[string]any{"amount": "12.5", "nested": "{a=1}"},
	}, task)
}

func TestRegistrationAndHeartbeatToProto(t *testing.T) {
	reg := taxRegistration()
	for ct, want := range map[domain.CommunicationType]gamelanv1.CommunicationType{
		domain.CommunicationGRPC:  gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC,
		domain.CommunicationKafka: gamelanv1.CommunicationType_COMMUNICATION_TYPE_KAFKA,
		domain.CommunicationREST:  gamelanv1.CommunicationType_COMMUNICATION_TYPE_REST,
		"":                        gamelanv1.CommunicationType_COMMUNICATION_TYPE_UNSPECIFIED,
	} {
		reg.CommunicationType = ct
		pr := registrationToProto(reg)
		assert.Equal(t, want, pr.GetCommunicationType(), "communication type %q", ct)
		assert.Equal(t, taxExecutorID, pr.GetExecutorId())
		assert.Equal(t, taxExecutorType, pr.GetExecutorType())
		assert.Equal(t, reg.Endpoint, pr.GetEndpoint())
		assert.Equal(t, reg.Metadata, pr.GetMetadata())
		assert.Equal(t, []string{taxNodeType}, pr.GetSupportedNodeTypes())
		assert.EqualValues(t, 64, pr.GetMaxConcurrentTasks())
	}

	hb := heartbeatToProto(domain.Heartbeat{ExecutorID: taxExecutorID, CurrentTasks: 3, CompletedTasks: 40, FailedTasks: 2, Status: domain.HealthDraining, Load: 0.75})
	assert.Equal(t, domain.Heartbeat{ExecutorID: taxExecutorID, CurrentTasks: 3, CompletedTasks: 40, FailedTasks: 2, Status: domain.HealthDraining, Load: 0.75},
		heartbeatFromProto(hb))
	assert.EqualValues(t, 3, hb.GetHealth().GetCurrentTasks(), "current tasks in the health too")
	// The load travels in ExecutorHealth's field 7, ours: check the wire
	// itself, not only the generated getter.
	wire, err := proto.Marshal(hb.GetHealth())
	require.NoError(t, err)
	assert.Contains(t, string(wire), string(append([]byte{7<<3 | 1}, protowire.AppendFixed64(nil, math.Float64bits(0.75))...)),
		"the load is not field 7, a double")
}

func TestCallErrorTranslatesStatuses(t *testing.T) {
	for code, want := range map[codes.Code]error{
		codes.NotFound:         domain.ErrNotRegistered,
		codes.Unauthenticated:  domain.ErrUnauthenticated,
		codes.PermissionDenied: domain.ErrUnauthenticated,
		codes.Unavailable:      nil,
	} {
		err := callError("heartbeat tax-1", status.Error(code, "engine says no"))
		assert.ErrorContains(t, err, "heartbeat tax-1", "the operation is named")
		assert.ErrorContains(t, err, "engine says no", "the engine's message is kept")
		if want != nil {
			assert.ErrorIs(t, err, want, "code %s", code)
		} else {
			assert.Equal(t, code, status.Code(err), "an untranslated status survives the wrapping")
			assert.NotErrorIs(t, err, domain.ErrNotRegistered)
			assert.NotErrorIs(t, err, domain.ErrUnauthenticated)
		}
	}
}

func TestClientConfigValidate(t *testing.T) {
	require.Error(t, ClientConfig{}.Validate(), "no target")
	require.Error(t, ClientConfig{Target: "127.0.0.1:1", MaxMessageSize: -1}.Validate(), "negative message size")
	require.NoError(t, ClientConfig{Target: "127.0.0.1:1"}.Validate())
	_, err := Dial(ClientConfig{})
	require.Error(t, err, "Dial validates")
}
