package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// leanEngine is the engine's side of the gRPC protocol (docs/protocol.md,
// section 2) cut down to what the load needs, served in the harness
// process on 127.0.0.1. It remembers registered endpoints, hands the tasks
// the harness schedules to the executor's StreamTasks or ExecuteStream
// call, and passes every result it hears of to the run being measured.
//
// It is deliberately not the reference engine (internal/engine/grpcengine):
// that one keeps a registry, counts outstanding tasks against
// max_concurrent and hands results to a Handler, and all that work would
// sit on the path of every task, of the executor and of its baseline
// alike, blurring the ratio between them. Here a task goes from the
// harness's channel straight to Send, and a result from Recv straight to
// the recorder. It ignores max_concurrent: the executor holds a stream
// back itself (it reads the next task only when it has room, so gRPC flow
// control stops the sends), and the raw baselines want no limit.
type leanEngine struct {
	gamelanv1.UnimplementedExecutorServiceServer

	server   *grpc.Server
	listener net.Listener

	mu        sync.Mutex
	endpoints map[string]string                        // executor id -> push endpoint
	queues    map[string]chan *gamelanv1.ExecutionTask // executor id -> its tasks not yet sent
	streams   map[string]int                           // executor id -> open task streams
	changed   chan struct{}                            // closed, and replaced, when the maps change

	run   atomic.Pointer[grpcRun] // the run being measured; nil between runs
	stale atomic.Int64            // results of no current run (late, or another run's)
	acks  atomic.Int64            // ExecuteStream acknowledgements heard
}

// queueSize bounds the tasks waiting for one executor's stream. A run
// schedules at most about 50,000 tasks, so an open-loop send never waits
// for room.
const queueSize = 1 << 16

// startLeanEngine serves the engine on a free loopback port.
func startLeanEngine() (*leanEngine, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &leanEngine{
		listener:  listener,
		server:    grpc.NewServer(),
		endpoints: map[string]string{},
		queues:    map[string]chan *gamelanv1.ExecutionTask{},
		streams:   map[string]int{},
		changed:   make(chan struct{}),
	}
	gamelanv1.RegisterExecutorServiceServer(e.server, e)
	go func() { _ = e.server.Serve(listener) }()
	return e, nil
}

// addr is the engine's address, GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET.
func (e *leanEngine) addr() string { return e.listener.Addr().String() }

// stop ends every call and closes the listener.
func (e *leanEngine) stop() { e.server.Stop() }

// RegisterExecutor remembers the executor's endpoint, where pushes go.
func (e *leanEngine) RegisterExecutor(_ context.Context, req *gamelanv1.RegisterExecutorRequest) (*gamelanv1.ExecutorRegistration, error) {
	if req.GetExecutorId() == "" {
		return nil, status.Error(codes.InvalidArgument, "executor_id is required")
	}
	e.update(func() { e.endpoints[req.GetExecutorId()] = req.GetEndpoint() })
	return &gamelanv1.ExecutorRegistration{ExecutorId: req.GetExecutorId(), Status: "REGISTERED", RegisteredAt: timestamppb.Now()}, nil
}

// UnregisterExecutor forgets the executor's endpoint.
func (e *leanEngine) UnregisterExecutor(_ context.Context, req *gamelanv1.UnregisterExecutorRequest) (*emptypb.Empty, error) {
	e.update(func() { delete(e.endpoints, req.GetExecutorId()) })
	return &emptypb.Empty{}, nil
}

// Heartbeat accepts every heartbeat: the lean engine never forgets an
// executor.
func (e *leanEngine) Heartbeat(context.Context, *gamelanv1.HeartbeatRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// StreamTasks sends the executor's tasks as the harness schedules them,
// until the call ends.
func (e *leanEngine) StreamTasks(req *gamelanv1.StreamTasksRequest, stream grpc.ServerStreamingServer[gamelanv1.ExecutionTask]) error {
	tasks := e.openStream(req.GetExecutorId())
	defer e.closeStream(req.GetExecutorId())
	for {
		select {
		case task := <-tasks:
			if err := stream.Send(task); err != nil {
				return err // the task is lost; the run notices it unanswered
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// ExecuteStream reads the executor's opening heartbeat, which names it, then
// sends its tasks while a goroutine reads what it says: acknowledgements,
// heartbeats and (never from this executor, but the protocol allows them)
// results.
func (e *leanEngine) ExecuteStream(stream grpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.GetHeartbeat().GetExecutorId()
	if id == "" {
		return status.Error(codes.InvalidArgument, "the first message must be a heartbeat naming the executor")
	}
	tasks := e.openStream(id)
	defer e.closeStream(id)
	received := make(chan error, 1)
	go func() { received <- e.readExecutorMessages(stream) }()
	for {
		select {
		case task := <-tasks:
			if err := stream.Send(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{Task: task}}); err != nil {
				return err
			}
		case err := <-received:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (e *leanEngine) readExecutorMessages(stream grpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage]) error {
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		switch {
		case msg.GetAck() != nil:
			e.acks.Add(1)
		case msg.GetResult() != nil:
			e.record(msg.GetResult())
		}
	}
}

// ReportResults passes each result on as it arrives, then acknowledges the
// batch.
func (e *leanEngine) ReportResults(stream grpc.ClientStreamingServer[gamelanv1.TaskResult, emptypb.Empty]) error {
	for {
		result, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&emptypb.Empty{})
		}
		if err != nil {
			return err
		}
		e.record(result)
	}
}

// record hands a result to the run it belongs to.
func (e *leanEngine) record(result *gamelanv1.TaskResult) {
	run := e.run.Load()
	if run == nil || result.GetRunId() != run.id {
		e.stale.Add(1)
		return
	}
	run.result(result)
}

// enqueue schedules task for the executor's stream (open or not yet).
func (e *leanEngine) enqueue(executorID string, task *gamelanv1.ExecutionTask) {
	e.queue(executorID) <- task
}

// discard drops the executor's tasks not yet sent, so that the leftovers
// of a run cut short do not go to the next one. It returns how many.
func (e *leanEngine) discard(executorID string) int {
	tasks := e.queue(executorID)
	for n := 0; ; n++ {
		select {
		case <-tasks:
		default:
			return n
		}
	}
}

func (e *leanEngine) queue(executorID string) chan *gamelanv1.ExecutionTask {
	e.mu.Lock()
	defer e.mu.Unlock()
	q, ok := e.queues[executorID]
	if !ok {
		q = make(chan *gamelanv1.ExecutionTask, queueSize)
		e.queues[executorID] = q
	}
	return q
}

func (e *leanEngine) openStream(executorID string) chan *gamelanv1.ExecutionTask {
	q := e.queue(executorID)
	e.update(func() { e.streams[executorID]++ })
	return q
}

func (e *leanEngine) closeStream(executorID string) {
	e.update(func() { e.streams[executorID]-- })
}

// update changes the maps under the lock and wakes every waiter.
func (e *leanEngine) update(change func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	change()
	close(e.changed)
	e.changed = make(chan struct{})
}

// waitFor returns once cond, called under the lock, holds, or ctx ends.
func (e *leanEngine) waitFor(ctx context.Context, what string, cond func() bool) error {
	for {
		e.mu.Lock()
		ok, changed := cond(), e.changed
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		}
	}
}

// waitIntake waits until the executor can take tasks over transport: its
// push endpoint is registered, or its task stream is open. It returns the
// endpoint.
func (e *leanEngine) waitIntake(ctx context.Context, executorID, transport string) (string, error) {
	var endpoint string
	err := e.waitFor(ctx, executorID+" "+transport+" intake", func() bool {
		endpoint = e.endpoints[executorID]
		if transport == "push" {
			return endpoint != ""
		}
		return e.streams[executorID] > 0
	})
	return endpoint, err
}

// taskIndex reads the index i out of a node id "n<i>", or -1.
func taskIndex(nodeID string) int {
	i, err := strconv.Atoi(strings.TrimPrefix(nodeID, "n"))
	if err != nil || !strings.HasPrefix(nodeID, "n") {
		return -1
	}
	return i
}
