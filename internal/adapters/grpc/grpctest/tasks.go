package grpctest

import (
	"context"
	"errors"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// taskStream is one open StreamTasks or ExecuteStream call. Its fields are
// guarded by Engine.mu; only the call's handler sends on the gRPC stream.
type taskStream struct {
	executorID string
	// bidi marks an ExecuteStream: its limit is the registration's
	// max_concurrent_tasks, and it can carry cancellations.
	bidi bool
	// maxConcurrent is a StreamTasks call's limit.
	maxConcurrent int32
	// outstanding holds the tasks sent and not yet answered by a result, by
	// result key; a key may hold several deliveries of one task.
	outstanding      map[string][]*gamelanv1.ExecutionTask
	outstandingCount int
	// cancellations wait to be sent (ExecuteStream only).
	cancellations []*gamelanv1.TaskCancellation
}

// outgoing is the next thing a stream's handler sends: a task or a
// cancellation.
type outgoing struct {
	task         *gamelanv1.ExecutionTask
	cancellation *gamelanv1.TaskCancellation
}

func (o outgoing) engineMessage() *gamelanv1.EngineMessage {
	if o.cancellation != nil {
		return &gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Cancellation{Cancellation: o.cancellation}}
	}
	return &gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{Task: o.task}}
}

// taskKey is the key results are deduplicated on and answer tasks by.
func taskKey(runID, nodeID string, attempt int32) string {
	return domain.IdempotencyKey(runID, nodeID, int(attempt))
}

// Enqueue queues copies of tasks, in order, for executorID's task streams
// (StreamTasks and ExecuteStream). Each task is sent once, on one stream,
// when that stream has room; a task queued twice is sent twice.
func (e *Engine) Enqueue(executorID string, tasks ...*gamelanv1.ExecutionTask) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range tasks {
		e.queues[executorID] = append(e.queues[executorID], proto.CloneOf(t))
	}
	e.notifyLocked()
}

// Queued returns how many tasks wait in executorID's queue, not yet sent.
func (e *Engine) Queued(executorID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queues[executorID])
}

// StreamCalls returns how many StreamTasks calls executorID made, the ones
// WithStreamTasksCompletesImmediately ended at once included.
func (e *Engine) StreamCalls(executorID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.streamCalls[executorID]
}

// StreamMaxConcurrent returns the max_concurrent that each StreamTasks call
// of executorID asked for, in call order, so that a test can check how much
// an executor asks for.
func (e *Engine) StreamMaxConcurrent(executorID string) []int32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.streamMaxConcurrent[executorID])
}

// OpenStreams returns how many task streams of executorID (StreamTasks and
// identified ExecuteStream calls) are open now, for tests that wait for an
// executor to (re)connect before they Enqueue or Cancel.
func (e *Engine) OpenStreams(executorID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for s := range e.streams {
		if s.executorID == executorID {
			n++
		}
	}
	return n
}

// Cancel sends a TaskCancellation with taskID and reason on every open
// ExecuteStream that carries the task, and reports whether there was one.
// taskID matches an outstanding task's task_id or its "runId:nodeId:attempt"
// key. A task that is still queued, was sent by StreamTasks, or whose result
// has arrived, is not cancelled: Cancel reports false. The task stays
// outstanding until its result arrives.
func (e *Engine) Cancel(taskID, reason string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	found := false
	for s := range e.streams {
		if s.bidi && s.carries(taskID) {
			s.cancellations = append(s.cancellations, &gamelanv1.TaskCancellation{TaskId: taskID, Reason: reason})
			found = true
		}
	}
	if found {
		e.notifyLocked()
	}
	return found
}

func (s *taskStream) carries(taskID string) bool {
	for key, tasks := range s.outstanding {
		if key == taskID {
			return true
		}
		for _, t := range tasks {
			if t.GetTaskId() == taskID {
				return true
			}
		}
	}
	return false
}

// StreamTasks implements gamelanv1.ExecutorServiceServer: it sends the tasks
// queued for the executor, at most max_concurrent outstanding, until the
// client goes or the engine stops. See the package documentation.
func (e *Engine) StreamTasks(req *gamelanv1.StreamTasksRequest, stream grpc.ServerStreamingServer[gamelanv1.ExecutionTask]) error {
	id := req.GetExecutorId()
	e.mu.Lock()
	e.streamCalls[id]++
	e.streamMaxConcurrent[id] = append(e.streamMaxConcurrent[id], req.GetMaxConcurrent())
	e.notifyLocked()
	if e.streamTasksCompletesImmediately {
		e.mu.Unlock()
		return nil
	}
	if id == "" {
		e.mu.Unlock()
		return status.Error(codes.InvalidArgument, "stream tasks: executor_id is empty")
	}
	s := e.openStreamLocked(id, false, req.GetMaxConcurrent())
	e.mu.Unlock()
	defer e.closeStream(s)
	return e.feed(stream.Context(), s, func(o outgoing) error { return stream.Send(o.task) }, nil)
}

// ExecuteStream implements gamelanv1.ExecutorServiceServer. The first
// message must be a heartbeat naming the executor; see the package
// documentation for the convention and what follows.
func (e *Engine) ExecuteStream(stream grpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage]) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	hb := first.GetHeartbeat()
	if hb.GetExecutorId() == "" {
		return status.Error(codes.InvalidArgument,
			"execute stream: the first message must be a heartbeat carrying the executor_id")
	}
	e.mu.Lock()
	if err := e.recordHeartbeatLocked(hb); err != nil {
		e.mu.Unlock()
		return err
	}
	s := e.openStreamLocked(hb.GetExecutorId(), true, 0)
	e.mu.Unlock()
	defer e.closeStream(s)

	// The receiver owns Recv; the handler owns Send. Stop waits for the
	// receiver, which ends once the call has (Recv then fails).
	received := make(chan error, 1)
	e.receivers.Add(1)
	go func() {
		defer e.receivers.Done()
		received <- e.receive(stream, s.executorID)
	}()
	return e.feed(stream.Context(), s, func(o outgoing) error { return stream.Send(o.engineMessage()) }, received)
}

// receive records what the executor sends on an ExecuteStream until the
// stream ends: nil when the executor closed its side, else why it ended.
func (e *Engine) receive(stream grpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage], executorID string) error {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch m := msg.GetMessage().(type) {
		case *gamelanv1.ExecutorMessage_Heartbeat:
			e.mu.Lock()
			err := e.recordHeartbeatLocked(m.Heartbeat)
			e.mu.Unlock()
			if err != nil {
				return err
			}
		case *gamelanv1.ExecutorMessage_Ack:
			e.mu.Lock()
			e.acks[executorID] = append(e.acks[executorID], m.Ack)
			e.notifyLocked()
			e.mu.Unlock()
		case *gamelanv1.ExecutorMessage_Result:
			e.mu.Lock()
			e.recordResultsLocked([]*gamelanv1.TaskResult{m.Result})
			e.mu.Unlock()
		default:
			return status.Error(codes.InvalidArgument, "execute stream: empty executor message")
		}
	}
}

func (e *Engine) openStreamLocked(executorID string, bidi bool, maxConcurrent int32) *taskStream {
	s := &taskStream{
		executorID:    executorID,
		bidi:          bidi,
		maxConcurrent: maxConcurrent,
		outstanding:   make(map[string][]*gamelanv1.ExecutionTask),
	}
	e.streams[s] = struct{}{}
	e.notifyLocked()
	return s
}

// closeStream forgets s: its outstanding tasks stop counting and are not
// requeued.
func (e *Engine) closeStream(s *taskStream) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.streams, s)
	e.notifyLocked()
}

// feed sends s's cancellations and tasks as they become due, until ctx ends,
// a send fails, or ended (nil for StreamTasks) reports why the call is over.
func (e *Engine) feed(ctx context.Context, s *taskStream, send func(outgoing) error, ended <-chan error) error {
	for {
		e.mu.Lock()
		next, ok := e.nextLocked(s)
		changed := e.changed
		e.mu.Unlock()
		if ok {
			if err := send(next); err != nil {
				e.unsend(s, next)
				return err
			}
			continue
		}
		select {
		case <-changed:
		case err := <-ended:
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// nextLocked takes what s should send next: a pending cancellation first,
// else the executor's next queued task when s has room for it. e.mu must be
// held.
func (e *Engine) nextLocked(s *taskStream) (outgoing, bool) {
	if len(s.cancellations) > 0 {
		c := s.cancellations[0]
		s.cancellations = s.cancellations[1:]
		return outgoing{cancellation: c}, true
	}
	queue := e.queues[s.executorID]
	if len(queue) == 0 || s.outstandingCount >= int(e.limitLocked(s)) {
		return outgoing{}, false
	}
	task := queue[0]
	e.queues[s.executorID] = queue[1:]
	key := taskKey(task.GetRunId(), task.GetNodeId(), task.GetAttempt())
	s.outstanding[key] = append(s.outstanding[key], task)
	s.outstandingCount++
	e.notifyLocked()
	// Send a copy: the outstanding task stays the engine's.
	return outgoing{task: proto.CloneOf(task)}, true
}

// limitLocked is how many tasks s may have outstanding. e.mu must be held.
func (e *Engine) limitLocked(s *taskStream) int32 {
	if !s.bidi {
		return s.maxConcurrent
	}
	return e.registrations[s.executorID].GetMaxConcurrentTasks()
}

// unsend undoes nextLocked for a task whose send failed: the task goes back
// to the front of the queue and no longer counts as outstanding.
func (e *Engine) unsend(s *taskStream, o outgoing) {
	if o.task == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	key := taskKey(o.task.GetRunId(), o.task.GetNodeId(), o.task.GetAttempt())
	tasks := s.outstanding[key]
	if len(tasks) == 0 {
		return // its result arrived meanwhile
	}
	task := tasks[len(tasks)-1]
	if len(tasks) == 1 {
		delete(s.outstanding, key)
	} else {
		s.outstanding[key] = tasks[:len(tasks)-1]
	}
	s.outstandingCount--
	e.queues[s.executorID] = slices.Insert(e.queues[s.executorID], 0, task)
	e.notifyLocked()
}

// releaseLocked ends the outstanding deliveries of key on every open stream:
// its result has arrived. e.mu must be held.
func (e *Engine) releaseLocked(key string) {
	for s := range e.streams {
		if tasks, ok := s.outstanding[key]; ok {
			s.outstandingCount -= len(tasks)
			delete(s.outstanding, key)
		}
	}
}
