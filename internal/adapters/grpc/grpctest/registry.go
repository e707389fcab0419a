package grpctest

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// RegisterExecutor implements gamelanv1.ExecutorServiceServer. It records the
// request, replacing an earlier registration of the same executor id, and
// answers the executor id, RegisteredStatus (or an empty status with
// WithEmptyRegistrationStatus) and the time. An empty executor id fails with
// codes.InvalidArgument.
func (e *Engine) RegisterExecutor(_ context.Context, req *gamelanv1.RegisterExecutorRequest) (*gamelanv1.ExecutorRegistration, error) {
	id := req.GetExecutorId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "register executor: executor_id is empty")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.registrations[id] = proto.CloneOf(req)
	e.registerCalls[id]++
	e.notifyLocked()
	answer := &gamelanv1.ExecutorRegistration{ExecutorId: id, RegisteredAt: timestamppb.Now()}
	if !e.emptyRegistrationStatus {
		answer.Status = RegisteredStatus
	}
	return answer, nil
}

// UnregisterExecutor implements gamelanv1.ExecutorServiceServer. It removes
// the registration, if any, and records the id (Unregistered) either way.
func (e *Engine) UnregisterExecutor(_ context.Context, req *gamelanv1.UnregisterExecutorRequest) (*emptypb.Empty, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.registrations, req.GetExecutorId())
	e.unregistered = append(e.unregistered, req.GetExecutorId())
	e.notifyLocked()
	return &emptypb.Empty{}, nil
}

// Heartbeat implements gamelanv1.ExecutorServiceServer. A heartbeat from an
// executor the engine does not know fails with codes.NotFound, so that the
// executor re-registers (the Gamelan engine answers success instead; this is
// the reference engine's rule). A known executor's heartbeat is recorded.
func (e *Engine) Heartbeat(_ context.Context, req *gamelanv1.HeartbeatRequest) (*emptypb.Empty, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.recordHeartbeatLocked(req); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// recordHeartbeatLocked records hb, or returns codes.NotFound when its
// executor is not registered. e.mu must be held.
func (e *Engine) recordHeartbeatLocked(hb *gamelanv1.HeartbeatRequest) error {
	id := hb.GetExecutorId()
	if _, ok := e.registrations[id]; !ok {
		return status.Errorf(codes.NotFound, "heartbeat: executor %q is not registered", id)
	}
	e.heartbeats[id] = append(e.heartbeats[id], proto.CloneOf(hb))
	e.notifyLocked()
	return nil
}

// Forget drops the registration of executorID without the executor asking,
// as an engine that restarted or expired it would: its next heartbeat fails
// with codes.NotFound. Its records (heartbeats, acks, results) are kept.
func (e *Engine) Forget(executorID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.registrations, executorID)
	e.notifyLocked()
}

// Registration returns the latest registration of executorID, and whether
// the executor is registered.
func (e *Engine) Registration(executorID string) (*gamelanv1.RegisterExecutorRequest, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg, ok := e.registrations[executorID]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(reg), true
}

// Registrations returns the current registrations, ordered by executor id.
func (e *Engine) Registrations() []*gamelanv1.RegisterExecutorRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	regs := make([]*gamelanv1.RegisterExecutorRequest, 0, len(e.registrations))
	for _, reg := range e.registrations {
		regs = append(regs, proto.CloneOf(reg))
	}
	slices.SortFunc(regs, func(a, b *gamelanv1.RegisterExecutorRequest) int {
		return strings.Compare(a.GetExecutorId(), b.GetExecutorId())
	})
	return regs
}

// RegisterCalls returns how many times executorID registered, re-registrations
// included (registration is idempotent, so an executor may repeat it).
func (e *Engine) RegisterCalls(executorID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.registerCalls[executorID]
}

// Unregistered returns the executor ids of every UnregisterExecutor call, in
// call order.
func (e *Engine) Unregistered() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.unregistered)
}

// Heartbeats returns the heartbeats recorded for executorID, unary and on
// ExecuteStream (the stream's first message included), in arrival order.
func (e *Engine) Heartbeats(executorID string) []*gamelanv1.HeartbeatRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneAll(e.heartbeats[executorID])
}

// Acks returns the task acknowledgements received on ExecuteStream streams
// of executorID, in arrival order.
func (e *Engine) Acks(executorID string) []*gamelanv1.TaskAcknowledgement {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneAll(e.acks[executorID])
}

func cloneAll[M proto.Message](msgs []M) []M {
	clones := make([]M, len(msgs))
	for i, m := range msgs {
		clones[i] = proto.CloneOf(m)
	}
	return clones
}
