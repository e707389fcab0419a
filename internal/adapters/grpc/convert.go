package grpc

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// retryableKey carries ErrorInfo.Retryable inside the error's context Struct,
// since the wire ErrorInfo has no field for it.
const retryableKey = "retryable"

// taskFromProto converts a task received from the engine (StreamTasks,
// ExecuteStream).
func taskFromProto(t *gamelanv1.ExecutionTask) domain.Task {
	task := domain.Task{
		TaskID:         t.GetTaskId(),
		RunID:          t.GetRunId(),
		NodeID:         t.GetNodeId(),
		NodeName:       t.GetNodeName(),
		NodeType:       t.GetNodeType(),
		Attempt:        int(t.GetAttempt()),
		ExecutionToken: t.GetExecutionToken(),
		Context:        t.GetContext().AsMap(),
		Configuration:  t.GetConfiguration().AsMap(),
		Timeout:        domain.TimeoutFromSeconds(t.GetTimeoutSeconds()),
	}
	if t.GetScheduledAt() != nil {
		task.ScheduledAt = t.GetScheduledAt().AsTime()
	}
	return task
}

// taskFromPush converts a push request. Variables stay strings, as the
// engine sent them.
func taskFromPush(req *dispatcherpb.ExecutionRequest) domain.Task {
	vars := make(map[string]any, len(req.GetVariables()))
	for k, v := range req.GetVariables() {
		vars[k] = v
	}
	return domain.Task{
		RunID:          req.GetRunId(),
		NodeID:         req.GetNodeId(),
		Attempt:        int(req.GetAttempt()),
		ExecutionToken: req.GetToken(),
		IdempotencyKey: req.GetIdempotencyKey(),
		Context:        vars,
	}
}

var statusToProto = map[domain.Status]gamelanv1.TaskStatus{
	domain.StatusCompleted: gamelanv1.TaskStatus_TASK_STATUS_COMPLETED,
	domain.StatusFailed:    gamelanv1.TaskStatus_TASK_STATUS_FAILED,
	domain.StatusCancelled: gamelanv1.TaskStatus_TASK_STATUS_CANCELLED,
	domain.StatusSkipped:   gamelanv1.TaskStatus_TASK_STATUS_SKIPPED,
}

// resultToProto converts a result for ReportResults. Output that protobuf's
// Struct cannot hold directly (custom types) goes through JSON first; what
// JSON cannot hold either is replaced by a note, never dropped silently.
// Strings that are not UTF-8 have their bad bytes replaced by U+FFFD, as
// JSON does on Kafka: protobuf refuses to encode them, and a result that
// cannot be encoded would be resent for ever. A result whose task brought
// its trace context in its context carries its own back in the output,
// under the same reserved keys (addTraceToOutput). (An engine that sends a
// token that is not UTF-8 on a stream, which decodes only from the raw
// frame, gets it back so.)
func resultToProto(r domain.Result) *gamelanv1.TaskResult {
	status, ok := statusToProto[r.Status]
	if !ok {
		status = gamelanv1.TaskStatus_TASK_STATUS_FAILED
	}
	pr := &gamelanv1.TaskResult{
		TaskId:         validUTF8(r.TaskID),
		RunId:          validUTF8(r.RunID),
		NodeId:         validUTF8(r.NodeID),
		Attempt:        int32(r.Attempt),
		ExecutionToken: validUTF8(r.ExecutionToken),
		Status:         status,
		Output:         addTraceToOutput(structOrNote(r.Output), r.Trace),
		CompletedAt:    timestamppb.New(r.CompletedAt),
	}
	if r.CompletedAt.IsZero() {
		pr.CompletedAt = timestamppb.Now()
	}
	if r.Error != nil {
		details := make(map[string]any, len(r.Error.Context)+1)
		for k, v := range r.Error.Context {
			details[k] = v
		}
		details[retryableKey] = r.Error.Retryable
		pr.Error = &gamelanv1.ErrorInfo{
			Code:       validUTF8(r.Error.Code),
			Message:    validUTF8(r.Error.Message),
			StackTrace: validUTF8(r.Error.StackTrace),
			Context:    structOrNote(details),
		}
	}
	return pr
}

// validUTF8 returns s with every byte sequence that is not UTF-8 replaced
// by U+FFFD; s itself when it is UTF-8.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// toStruct converts a map to a Struct, through JSON when it holds values
// Struct does not know (structs, typed slices, time.Time).
func toStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	s, err := structpb.NewStruct(m)
	if err == nil {
		return s, nil
	}
	raw, jerr := json.Marshal(m)
	if jerr != nil {
		return nil, fmt.Errorf("not representable as JSON: %w", jerr)
	}
	var plain map[string]any
	if jerr := json.Unmarshal(raw, &plain); jerr != nil {
		return nil, fmt.Errorf("not representable as JSON: %w", jerr)
	}
	return structpb.NewStruct(plain)
}

func structOrNote(m map[string]any) *structpb.Struct {
	s, err := toStruct(m)
	if err != nil {
		note, _ := structpb.NewStruct(map[string]any{"outputError": "output not representable as JSON: " + err.Error()})
		return note
	}
	return s
}

// registrationToProto converts a registration for RegisterExecutor.
func registrationToProto(reg domain.Registration) *gamelanv1.RegisterExecutorRequest {
	return &gamelanv1.RegisterExecutorRequest{
		ExecutorId:         reg.ExecutorID,
		ExecutorType:       reg.Descriptor.Type,
		CommunicationType:  communicationToProto(reg.CommunicationType),
		Endpoint:           reg.Endpoint,
		Metadata:           reg.Metadata,
		SupportedNodeTypes: reg.Descriptor.SupportedNodeTypes,
		MaxConcurrentTasks: int32(reg.Descriptor.MaxConcurrentTasks),
	}
}

func communicationToProto(c domain.CommunicationType) gamelanv1.CommunicationType {
	switch c {
	case domain.CommunicationGRPC:
		return gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC
	case domain.CommunicationKafka:
		return gamelanv1.CommunicationType_COMMUNICATION_TYPE_KAFKA
	case domain.CommunicationREST:
		return gamelanv1.CommunicationType_COMMUNICATION_TYPE_REST
	}
	return gamelanv1.CommunicationType_COMMUNICATION_TYPE_UNSPECIFIED
}

func heartbeatToProto(hb domain.Heartbeat) *gamelanv1.HeartbeatRequest {
	return &gamelanv1.HeartbeatRequest{
		ExecutorId:       hb.ExecutorID,
		CurrentTaskCount: int32(hb.CurrentTasks),
		Health: &gamelanv1.ExecutorHealth{
			Status:         hb.Status,
			CurrentTasks:   int32(hb.CurrentTasks),
			CompletedTasks: int32(hb.CompletedTasks),
			FailedTasks:    int32(hb.FailedTasks),
			Load:           hb.Load,
		},
	}
}
