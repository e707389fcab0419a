package grpctest

import (
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// recorder is the Engine's grpcengine.Handler: it keeps the registrations
// and records every call, for the test to read.
type recorder struct {
	mu sync.Mutex
	// changed is closed and replaced on every change, so that
	// WaitForResults wakes without polling.
	changed chan struct{}

	registrations map[string]*gamelanv1.RegisterExecutorRequest
	registerCalls map[string]int
	unregistered  []string
	heartbeats    map[string][]*gamelanv1.HeartbeatRequest
	acks          map[string][]*gamelanv1.TaskAcknowledgement
	// streamCalls counts StreamTasks calls by executor id, and
	// streamMaxConcurrent holds each call's max_concurrent in call order.
	streamCalls         map[string]int
	streamMaxConcurrent map[string][]int32

	results           []*gamelanv1.TaskResult
	unique            map[string]*gamelanv1.TaskResult
	traces            map[string]*domain.TraceContext // of the unique results
	duplicates        int
	failReportResults int
	hold              *resultHold // HoldReportResults, nil when not holding
}

var _ grpcengine.TracedHandler = (*recorder)(nil)

func newRecorder() *recorder {
	return &recorder{
		changed:             make(chan struct{}),
		registrations:       make(map[string]*gamelanv1.RegisterExecutorRequest),
		registerCalls:       make(map[string]int),
		heartbeats:          make(map[string][]*gamelanv1.HeartbeatRequest),
		acks:                make(map[string][]*gamelanv1.TaskAcknowledgement),
		streamCalls:         make(map[string]int),
		streamMaxConcurrent: make(map[string][]int32),
		unique:              make(map[string]*gamelanv1.TaskResult),
		traces:              make(map[string]*domain.TraceContext),
	}
}

// notifyLocked wakes every waiter. r.mu must be held.
func (r *recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Register records the request, replacing an earlier registration of the
// same executor id.
func (r *recorder) Register(req *gamelanv1.RegisterExecutorRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registrations[req.GetExecutorId()] = proto.CloneOf(req)
	r.registerCalls[req.GetExecutorId()]++
	r.notifyLocked()
	return nil
}

// Unregister removes the registration, if any, and records the id either
// way.
func (r *recorder) Unregister(executorID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.registrations, executorID)
	r.unregistered = append(r.unregistered, executorID)
	r.notifyLocked()
}

// Heartbeat records the heartbeat of a registered executor; one from an
// executor the engine does not know fails with codes.NotFound (the Gamelan
// engine answers success instead; this is the reference engine's rule).
func (r *recorder) Heartbeat(hb *gamelanv1.HeartbeatRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := hb.GetExecutorId()
	if _, ok := r.registrations[id]; !ok {
		return grpcengine.NotRegistered(id)
	}
	r.heartbeats[id] = append(r.heartbeats[id], proto.CloneOf(hb))
	r.notifyLocked()
	return nil
}

// Acknowledged records an ExecuteStream acknowledgement.
func (r *recorder) Acknowledged(executorID string, ack *gamelanv1.TaskAcknowledgement) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acks[executorID] = append(r.acks[executorID], proto.CloneOf(ack))
	r.notifyLocked()
}

// StreamRequested records a StreamTasks call; the engine takes every one
// (a registration is not required).
func (r *recorder) StreamRequested(req *gamelanv1.StreamTasksRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := req.GetExecutorId()
	r.streamCalls[id]++
	r.streamMaxConcurrent[id] = append(r.streamMaxConcurrent[id], req.GetMaxConcurrent())
	r.notifyLocked()
	return nil
}

// MaxConcurrentTasks is the registration's max_concurrent_tasks, 0 (no
// task) for an executor not registered.
func (r *recorder) MaxConcurrentTasks(executorID string) int32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registrations[executorID].GetMaxConcurrentTasks()
}

// StreamClosed lets the unanswered tasks of a stream go: the engine neither
// requeues nor reassigns them (a test that wants redelivery enqueues again).
func (r *recorder) StreamClosed(string, []*gamelanv1.ExecutionTask) {}

// Forget drops the registration of executorID without the executor asking,
// as an engine that restarted or expired it would: its next heartbeat fails
// with codes.NotFound. Its records (heartbeats, acks, results) are kept.
func (e *Engine) Forget(executorID string) {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	delete(e.rec.registrations, executorID)
	e.rec.notifyLocked()
}

// Registration returns the latest registration of executorID, and whether
// the executor is registered.
func (e *Engine) Registration(executorID string) (*gamelanv1.RegisterExecutorRequest, bool) {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	reg, ok := e.rec.registrations[executorID]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(reg), true
}

// Registrations returns the current registrations, ordered by executor id.
func (e *Engine) Registrations() []*gamelanv1.RegisterExecutorRequest {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	regs := make([]*gamelanv1.RegisterExecutorRequest, 0, len(e.rec.registrations))
	for _, reg := range e.rec.registrations {
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
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return e.rec.registerCalls[executorID]
}

// Unregistered returns the executor ids of every UnregisterExecutor call, in
// call order.
func (e *Engine) Unregistered() []string {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return slices.Clone(e.rec.unregistered)
}

// Heartbeats returns the heartbeats recorded for executorID, unary and on
// ExecuteStream (the stream's first message included), in arrival order.
func (e *Engine) Heartbeats(executorID string) []*gamelanv1.HeartbeatRequest {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return cloneAll(e.rec.heartbeats[executorID])
}

// Acks returns the task acknowledgements received on ExecuteStream streams
// of executorID, in arrival order.
func (e *Engine) Acks(executorID string) []*gamelanv1.TaskAcknowledgement {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return cloneAll(e.rec.acks[executorID])
}

// StreamCalls returns how many StreamTasks calls executorID made, the ones
// WithStreamTasksCompletesImmediately ended at once included.
func (e *Engine) StreamCalls(executorID string) int {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return e.rec.streamCalls[executorID]
}

// StreamMaxConcurrent returns the max_concurrent that each StreamTasks call
// of executorID asked for, in call order, so that a test can check how much
// an executor asks for.
func (e *Engine) StreamMaxConcurrent(executorID string) []int32 {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return slices.Clone(e.rec.streamMaxConcurrent[executorID])
}

func cloneAll[M proto.Message](msgs []M) []M {
	clones := make([]M, len(msgs))
	for i, m := range msgs {
		clones[i] = proto.CloneOf(m)
	}
	return clones
}
