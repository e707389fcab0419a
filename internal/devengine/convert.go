package devengine

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// The engine side's conversions between the domain and the wire.

// taskToProto converts a task for ExecuteStream and StreamTasks. Its
// context is converted through JSON when Struct refuses a value; a context
// that cannot be converted either way is an error, never an empty context
// (Engine.Submit refuses such contexts, so that a task never has one).
func taskToProto(t domain.Task) (*gamelanv1.ExecutionTask, error) {
	ctx, err := structpb.NewStruct(t.Context)
	if err != nil { // values Struct does not know: through JSON
		var plain map[string]any
		if plain, err = jsonSafe(t.Context); err == nil {
			ctx, err = structpb.NewStruct(plain)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", t.TaskID, err)
	}
	pt := &gamelanv1.ExecutionTask{
		TaskId: t.TaskID, RunId: t.RunID, NodeId: t.NodeID, NodeType: t.NodeType, Attempt: int32(t.Attempt),
		ExecutionToken: t.ExecutionToken, Context: ctx, TimeoutSeconds: int64(t.Timeout / time.Second),
	}
	if !t.ScheduledAt.IsZero() {
		pt.ScheduledAt = timestamppb.New(t.ScheduledAt)
	}
	return pt, nil
}

// jsonSafe round-trips a task context through JSON, so that it holds
// only what JSON carries (which Struct, and every transport, accepts):
// numbers as float64, typed slices as []any, times as RFC 3339 strings.
// A context JSON cannot carry (a func, a channel, NaN) is an error.
func jsonSafe(m map[string]any) (map[string]any, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("context is not representable as JSON: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("context is not representable as JSON: %w", err)
	}
	return out, nil
}

var statusFromProto = map[gamelanv1.TaskStatus]domain.Status{
	gamelanv1.TaskStatus_TASK_STATUS_COMPLETED: domain.StatusCompleted,
	gamelanv1.TaskStatus_TASK_STATUS_FAILED:    domain.StatusFailed,
	gamelanv1.TaskStatus_TASK_STATUS_CANCELLED: domain.StatusCancelled,
	gamelanv1.TaskStatus_TASK_STATUS_SKIPPED:   domain.StatusSkipped,
}

// resultFromProto converts a result; a status a result may not carry keeps
// its name (RUNNING), for the engine to refuse.
func resultFromProto(pr *gamelanv1.TaskResult) domain.Result {
	status, ok := statusFromProto[pr.GetStatus()]
	if !ok {
		status = domain.Status(strings.TrimPrefix(pr.GetStatus().String(), "TASK_STATUS_"))
	}
	r := domain.Result{
		TaskID: pr.GetTaskId(), RunID: pr.GetRunId(), NodeID: pr.GetNodeId(), Attempt: int(pr.GetAttempt()),
		ExecutionToken: pr.GetExecutionToken(), Status: status, Output: pr.GetOutput().AsMap(),
		CompletedAt: pr.GetCompletedAt().AsTime(),
	}
	if e := pr.GetError(); e != nil {
		details := e.GetContext().AsMap()
		retryable, _ := details["retryable"].(bool)
		delete(details, "retryable")
		r.Error = &domain.ErrorInfo{Code: e.GetCode(), Message: e.GetMessage(), StackTrace: e.GetStackTrace(), Context: details, Retryable: retryable}
	}
	return r
}

// pushRequest builds the push request the way the Gamelan engine does:
// variables as plain strings, the signature naming the chosen executor.
func pushRequest(t domain.Task, executorID string) *dispatcherpb.ExecutionRequest {
	vars := make(map[string]string, len(t.Context))
	for k, v := range t.Context {
		vars[k] = plainString(v)
	}
	if t.NodeType != "" {
		vars[domain.NodeTypeKey] = t.NodeType
	}
	return &dispatcherpb.ExecutionRequest{
		RunId: t.RunID, NodeId: t.NodeID, Attempt: int32(t.Attempt), Token: t.ExecutionToken, Variables: vars,
		IdempotencyKey: t.Key(), Signature: grpcengine.Signature(t.RunID, executorID),
	}
}

// plainString renders a variable as text: strings as they are, numbers in
// their shortest form, anything else as JSON, which cannot fail: a task's
// context holds only what JSON carries (see jsonSafe).
func plainString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int:
		return strconv.Itoa(x)
	case bool:
		return strconv.FormatBool(x)
	}
	raw, _ := json.Marshal(v)
	return string(raw)
}

func heartbeatFromProto(hb *gamelanv1.HeartbeatRequest) domain.Heartbeat {
	return domain.Heartbeat{ExecutorID: hb.GetExecutorId(), CurrentTasks: int(hb.GetCurrentTaskCount()), Status: hb.GetHealth().GetStatus(),
		Load: hb.GetHealth().GetLoad()}
}
