package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// extrasEngine is the engine of the footprint and lifecycle scenarios: the
// project's engine side of the gRPC protocol (grpcengine.Server) on
// 127.0.0.1, with a handler that remembers where executors registered and
// what results arrived, and when. It answers every heartbeat and stream.
type extrasEngine struct {
	server *grpcengine.Server

	mu        sync.Mutex
	changed   chan struct{}     // closed and replaced on every registration or result
	endpoints map[string]string // push endpoint by executor id
	results   map[string]int    // results received, by node id
	statuses  map[string]string // status of a node's first result
	firstAt   map[string]time.Time
	lastAt    time.Time // when the last first result arrived
	distinct  int
	dups      int
}

var _ grpcengine.Handler = (*extrasEngine)(nil)

// startExtrasEngine serves the engine on a free port of 127.0.0.1.
func startExtrasEngine() (*extrasEngine, error) {
	e := &extrasEngine{changed: make(chan struct{}), endpoints: map[string]string{}, results: map[string]int{},
		statuses: map[string]string{}, firstAt: map[string]time.Time{}}
	e.server = grpcengine.New(e, grpcengine.Config{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := e.server.Start(lis); err != nil {
		return nil, err
	}
	return e, nil
}

// addr is the engine's address, the executor's ENGINE_GRPC_TARGET.
func (e *extrasEngine) addr() string { return e.server.Addr() }

func (e *extrasEngine) close() { e.server.Close() }

// notifyLocked wakes waiters; e.mu must be held.
func (e *extrasEngine) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// waitFor waits until cond (called under e.mu) holds, or d passes.
func (e *extrasEngine) waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		e.mu.Lock()
		ok, changed := cond(), e.changed
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("engine: %s: not within %s", what, d)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// endpoint waits for executorID's registration and returns its endpoint.
func (e *extrasEngine) endpoint(ctx context.Context, executorID string) (string, error) {
	var addr string
	err := e.waitFor(ctx, 30*time.Second, executorID+" registers", func() bool {
		addr = e.endpoints[executorID]
		return addr != ""
	})
	return addr, err
}

// waitResults waits until n distinct nodes have a result.
func (e *extrasEngine) waitResults(ctx context.Context, n int, d time.Duration) error {
	return e.waitFor(ctx, d, fmt.Sprintf("%d results", n), func() bool { return e.distinct >= n })
}

// resultAt returns when nodeID's first result arrived, waiting up to d.
func (e *extrasEngine) resultAt(ctx context.Context, nodeID string, d time.Duration) (time.Time, error) {
	var at time.Time
	err := e.waitFor(ctx, d, "a result for "+nodeID, func() bool {
		at = e.firstAt[nodeID]
		return !at.IsZero()
	})
	return at, err
}

// tally returns the distinct results, the duplicates, the first results
// whose status is not want, and when the last first result arrived.
func (e *extrasEngine) tally(want string) (distinct, dups, other int, last time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.statuses {
		if s != want {
			other++
		}
	}
	return e.distinct, e.dups, other, e.lastAt
}

// Register implements grpcengine.Handler.
func (e *extrasEngine) Register(req *gamelanv1.RegisterExecutorRequest) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.endpoints[req.GetExecutorId()] = req.GetEndpoint()
	e.notifyLocked()
	return nil
}

// Unregister implements grpcengine.Handler.
func (e *extrasEngine) Unregister(string) {}

// Heartbeat implements grpcengine.Handler.
func (e *extrasEngine) Heartbeat(*gamelanv1.HeartbeatRequest) error { return nil }

// Results implements grpcengine.Handler.
func (e *extrasEngine) Results(_ string, results []*gamelanv1.TaskResult) error {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range results {
		node := r.GetNodeId()
		e.results[node]++
		if e.results[node] > 1 {
			e.dups++
			continue
		}
		e.distinct++
		e.statuses[node] = r.GetStatus().String()
		e.firstAt[node] = now
		e.lastAt = now
	}
	e.notifyLocked()
	return nil
}

// Acknowledged implements grpcengine.Handler.
func (e *extrasEngine) Acknowledged(string, *gamelanv1.TaskAcknowledgement) {}

// StreamRequested implements grpcengine.Handler.
func (e *extrasEngine) StreamRequested(*gamelanv1.StreamTasksRequest) error { return nil }

// MaxConcurrentTasks implements grpcengine.Handler: no limit of the
// engine's own.
func (e *extrasEngine) MaxConcurrentTasks(string) int32 { return 1 << 20 }

// StreamClosed implements grpcengine.Handler.
func (e *extrasEngine) StreamClosed(string, []*gamelanv1.ExecutionTask) {}

// statusCompleted is how a COMPLETED gRPC result's status prints.
var statusCompleted = gamelanv1.TaskStatus_TASK_STATUS_COMPLETED.String()

// pushAll pushes tasks to the executor at addr from workers goroutines
// and fails on the first refusal: the scenarios size the executor for all
// of them.
func (e *extrasEngine) pushAll(ctx context.Context, addr string, workers int, tasks []*dispatcherpb.ExecutionRequest) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(tasks) || ctx.Err() != nil {
					return
				}
				ack, err := e.server.Push(ctx, addr, tasks[i])
				if err == nil && !ack.GetAccepted() {
					err = fmt.Errorf("push %s refused: %d %s", tasks[i].GetNodeId(), ack.GetCode(), ack.GetMessage())
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when no worker failed
}

// paymentPush is a payment-processor task for the push intake, addressed
// to executorID by its signature; without a customer it fails at once
// (INVALID_PAYMENT), without waiting for the gateway.
func paymentPush(executorID, nodeID string, withCustomer bool) *dispatcherpb.ExecutionRequest {
	runID := "bench-run-1"
	vars := map[string]string{"totalAmount": "125.50"}
	if withCustomer {
		vars["customerId"] = "cust-42"
	}
	return &dispatcherpb.ExecutionRequest{
		RunId: runID, NodeId: nodeID, Attempt: 1, Token: "exec-token-" + nodeID, Variables: vars,
		IdempotencyKey: runID + ":" + nodeID + ":1", Signature: grpcengine.Signature(runID, executorID),
	}
}

// taxTask is a calculate-tax task for the stream intakes.
func taxTask(nodeID string) *gamelanv1.ExecutionTask {
	ctx, err := structpb.NewStruct(map[string]any{"amount": 125.5})
	if err != nil {
		panic(err) // a number always converts
	}
	return &gamelanv1.ExecutionTask{TaskId: "task-" + nodeID, RunId: "bench-run-1", NodeId: nodeID, Attempt: 1,
		NodeType: "calculate-tax", ExecutionToken: "exec-token-" + nodeID, Context: ctx}
}
