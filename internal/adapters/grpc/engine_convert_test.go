package grpc

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// The engine side's conversions, used by the tests to publish domain tasks
// to the test engine and to read its results back as domain results.

// taskToProto converts a task for the engine side (tests and the reference
// engine send tasks this way).
func taskToProto(t domain.Task) (*gamelanv1.ExecutionTask, error) {
	ctx, err := toStruct(t.Context)
	if err != nil {
		return nil, fmt.Errorf("task %s context: %w", t.ID(), err)
	}
	cfg, err := toStruct(t.Configuration)
	if err != nil {
		return nil, fmt.Errorf("task %s configuration: %w", t.ID(), err)
	}
	pt := &gamelanv1.ExecutionTask{
		TaskId: t.TaskID, RunId: t.RunID, NodeId: t.NodeID, NodeName: t.NodeName, NodeType: t.NodeType,
		Attempt: int32(t.Attempt), ExecutionToken: t.ExecutionToken, Context: ctx, Configuration: cfg,
		TimeoutSeconds: int64(t.Timeout / time.Second),
	}
	if !t.ScheduledAt.IsZero() {
		pt.ScheduledAt = timestamppb.New(t.ScheduledAt)
	}
	return pt, nil
}

// resultFromProto converts a result received by the engine side.
func resultFromProto(pr *gamelanv1.TaskResult) domain.Result {
	r := domain.Result{
		TaskID:         pr.GetTaskId(),
		RunID:          pr.GetRunId(),
		NodeID:         pr.GetNodeId(),
		Attempt:        int(pr.GetAttempt()),
		ExecutionToken: pr.GetExecutionToken(),
		Status:         domain.StatusFailed,
		Output:         pr.GetOutput().AsMap(),
		CompletedAt:    pr.GetCompletedAt().AsTime(),
	}
	for s, p := range statusToProto {
		if p == pr.GetStatus() {
			r.Status = s
		}
	}
	if e := pr.GetError(); e != nil {
		details := e.GetContext().AsMap()
		retryable, _ := details[retryableKey].(bool)
		delete(details, retryableKey)
		if len(details) == 0 {
			details = nil
		}
		r.Error = &domain.ErrorInfo{Code: e.GetCode(), Message: e.GetMessage(), StackTrace: e.GetStackTrace(), Context: details, Retryable: retryable}
	}
	return r
}
