package grpcengine

import (
	"context"
	"errors"
	"io"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// Kind names the kind of an executor's open task streams.
type Kind string

// The kinds of task streams: none open, StreamTasks calls, ExecuteStream
// calls.
const (
	NoStream          Kind = ""
	StreamTasksKind   Kind = "StreamTasks"
	ExecuteStreamKind Kind = "ExecuteStream"
)

// queued is a task waiting in an executor's queue, and the cancellation to
// send right after it, if Cancel came first.
type queued struct {
	task         *gamelanv1.ExecutionTask
	cancellation *gamelanv1.TaskCancellation
}

// taskStream is one open StreamTasks or ExecuteStream call. Its fields are
// guarded by Server.mu; only the call's handler sends on the gRPC stream.
type taskStream struct {
	executorID string
	// bidi marks an ExecuteStream: its limit is the Handler's
	// MaxConcurrentTasks, and it can carry cancellations.
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

// Enqueue queues copies of tasks, in order, for executorID's task streams,
// whether one is open or not. Each task is sent once, on one stream, when
// that stream has room; a task queued twice is sent twice.
func (s *Server) Enqueue(executorID string, tasks ...*gamelanv1.ExecutionTask) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range tasks {
		s.queues[executorID] = append(s.queues[executorID], &queued{task: proto.CloneOf(t)})
	}
	s.notifyLocked()
}

// Offer queues a copy of task for executorID's task streams only while one
// is open, and returns their kind; false when none is (push it instead).
func (s *Server) Offer(executorID string, task *gamelanv1.ExecutionTask) (Kind, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kind := s.kindLocked(executorID)
	if kind == NoStream {
		return NoStream, false
	}
	s.queues[executorID] = append(s.queues[executorID], &queued{task: proto.CloneOf(task)})
	s.notifyLocked()
	return kind, true
}

// Unqueue takes back the tasks queued for executorID and not sent yet.
func (s *Server) Unqueue(executorID string) []*gamelanv1.ExecutionTask {
	s.mu.Lock()
	defer s.mu.Unlock()
	var tasks []*gamelanv1.ExecutionTask
	for _, q := range s.queues[executorID] {
		tasks = append(tasks, q.task)
	}
	delete(s.queues, executorID)
	s.notifyLocked()
	return tasks
}

// Queued returns how many tasks wait in executorID's queue, not yet sent.
func (s *Server) Queued(executorID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queues[executorID])
}

// OpenStreams returns how many task streams of executorID (StreamTasks and
// identified ExecuteStream calls) are open now.
func (s *Server) OpenStreams(executorID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ts := range s.streams {
		if ts.executorID == executorID {
			n++
		}
	}
	return n
}

// StreamKind returns the kind of executorID's open task streams:
// ExecuteStreamKind only when every one is an ExecuteStream (only those can
// carry cancellations), NoStream when none is open.
func (s *Server) StreamKind(executorID string) Kind {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kindLocked(executorID)
}

func (s *Server) kindLocked(executorID string) Kind {
	kind := NoStream
	for ts := range s.streams {
		if ts.executorID != executorID {
			continue
		}
		if !ts.bidi {
			return StreamTasksKind
		}
		kind = ExecuteStreamKind
	}
	return kind
}

// Room returns how many more tasks executorID's open StreamTasks calls can
// take now: the room their max_concurrent leaves beside their outstanding
// tasks, less the tasks already queued; an engine that gives the executor
// no more than that never has a task wait on a full stream. limited is
// false when the executor has no open stream, or an ExecuteStream, whose
// limit is the registration's.
func (s *Server) Room(executorID string) (room int, limited bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ts := range s.streams {
		if ts.executorID != executorID {
			continue
		}
		if ts.bidi {
			return 0, false
		}
		room += max(int(ts.maxConcurrent)-ts.outstandingCount, 0)
		limited = true
	}
	return room - len(s.queues[executorID]), limited
}

// Cancel sends a TaskCancellation with taskID and reason on every open
// ExecuteStream that carries the task (outstanding on it), or right after
// the task when it is still queued for an executor whose open streams are
// all ExecuteStream calls, and reports whether there was such a stream.
// taskID matches a task_id or a "runId:nodeId:attempt" key. A task sent by
// StreamTasks, or whose result has arrived, is not cancelled: Cancel
// reports false. A cancelled task stays outstanding until its result.
func (s *Server) Cancel(taskID, reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cancellation := func() *gamelanv1.TaskCancellation {
		return &gamelanv1.TaskCancellation{TaskId: taskID, Reason: reason}
	}
	found := false
	for ts := range s.streams {
		if ts.bidi && ts.carries(taskID) {
			ts.cancellations = append(ts.cancellations, cancellation())
			found = true
		}
	}
	for executorID, queue := range s.queues {
		if s.kindLocked(executorID) != ExecuteStreamKind {
			continue
		}
		for _, q := range queue {
			if q.task.GetTaskId() == taskID || taskKey(q.task) == taskID {
				q.cancellation = cancellation()
				found = true
			}
		}
	}
	if found {
		s.notifyLocked()
	}
	return found
}

func (ts *taskStream) carries(taskID string) bool {
	for key, tasks := range ts.outstanding {
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
// client goes or the Server stops.
func (s *Server) StreamTasks(req *gamelanv1.StreamTasksRequest, stream grpc.ServerStreamingServer[gamelanv1.ExecutionTask]) error {
	if err := s.handler.StreamRequested(req); err != nil {
		return err
	}
	if s.cfg.StreamTasksEndsAtOnce {
		return nil
	}
	if req.GetExecutorId() == "" {
		return status.Error(codes.InvalidArgument, "stream tasks: executor_id is empty")
	}
	ts := s.openStream(req.GetExecutorId(), false, req.GetMaxConcurrent())
	defer s.closeStream(ts)
	return s.feed(stream.Context(), ts, func(o outgoing) error { return stream.Send(o.task) }, nil)
}

// ExecuteStream implements gamelanv1.ExecutorServiceServer. The first
// message must be a heartbeat naming the executor.
func (s *Server) ExecuteStream(stream grpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage]) error {
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
	if err := s.handler.Heartbeat(hb); err != nil {
		return err
	}
	ts := s.openStream(hb.GetExecutorId(), true, 0)
	defer s.closeStream(ts)

	// The receiver owns Recv; the handler owns Send. Stop waits for the
	// receiver, which ends once the call has (Recv then fails).
	received := make(chan error, 1)
	s.receivers.Add(1)
	go func() {
		defer s.receivers.Done()
		received <- s.receive(stream, ts.executorID)
	}()
	return s.feed(stream.Context(), ts, func(o outgoing) error { return stream.Send(o.engineMessage()) }, received)
}

// receive hands what the executor sends on an ExecuteStream to the Handler
// until the stream ends: nil when the executor closed its side, else why it
// ended.
func (s *Server) receive(stream grpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage], executorID string) error {
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
			if err := s.handler.Heartbeat(m.Heartbeat); err != nil {
				return err
			}
		case *gamelanv1.ExecutorMessage_Ack:
			s.handler.Acknowledged(executorID, m.Ack)
		case *gamelanv1.ExecutorMessage_Result:
			if err := s.results(executorID, []*gamelanv1.TaskResult{m.Result}, nil); err != nil {
				return err
			}
		default:
			return status.Error(codes.InvalidArgument, "execute stream: empty executor message")
		}
	}
}

func (s *Server) openStream(executorID string, bidi bool, maxConcurrent int32) *taskStream {
	ts := &taskStream{
		executorID:    executorID,
		bidi:          bidi,
		maxConcurrent: maxConcurrent,
		outstanding:   make(map[string][]*gamelanv1.ExecutionTask),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[ts] = struct{}{}
	s.notifyLocked()
	return ts
}

// closeStream forgets ts and hands its outstanding tasks to the Handler.
func (s *Server) closeStream(ts *taskStream) {
	s.mu.Lock()
	delete(s.streams, ts)
	var unanswered []*gamelanv1.ExecutionTask
	for _, tasks := range ts.outstanding {
		unanswered = append(unanswered, tasks...)
	}
	s.notifyLocked()
	s.mu.Unlock()
	s.handler.StreamClosed(ts.executorID, unanswered)
}

// errStopping ends the streams of a Server that shuts down; executors
// reconnect.
var errStopping = status.Error(codes.Unavailable, "the engine is stopping")

// feed sends ts's cancellations and tasks as they become due, until ctx
// ends, a send fails, the Server shuts down, or ended (nil for StreamTasks)
// reports why the call is over.
func (s *Server) feed(ctx context.Context, ts *taskStream, send func(outgoing) error, ended <-chan error) error {
	for {
		// An ExecuteStream's limit may change with a new registration: it
		// is read before each task, without holding s.mu.
		limit := ts.maxConcurrent
		if ts.bidi {
			limit = s.handler.MaxConcurrentTasks(ts.executorID)
		}
		s.mu.Lock()
		next, ok := s.nextLocked(ts, limit)
		changed, stopping := s.changed, s.stopping
		s.mu.Unlock()
		if ok {
			if err := send(next); err != nil {
				s.unsend(ts, next)
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
		case <-stopping:
			return errStopping
		}
	}
}

// nextLocked takes what ts should send next: a pending cancellation first,
// else the executor's next queued task when ts has room for it. s.mu must
// be held.
func (s *Server) nextLocked(ts *taskStream, limit int32) (outgoing, bool) {
	if len(ts.cancellations) > 0 {
		c := ts.cancellations[0]
		ts.cancellations = ts.cancellations[1:]
		return outgoing{cancellation: c}, true
	}
	queue := s.queues[ts.executorID]
	if len(queue) == 0 || ts.outstandingCount >= int(limit) {
		return outgoing{}, false
	}
	q := queue[0]
	queue[0] = nil
	s.queues[ts.executorID] = queue[1:]
	if len(queue) == 1 {
		delete(s.queues, ts.executorID)
	}
	key := taskKey(q.task)
	ts.outstanding[key] = append(ts.outstanding[key], q.task)
	ts.outstandingCount++
	if q.cancellation != nil && ts.bidi {
		ts.cancellations = append(ts.cancellations, q.cancellation)
	}
	s.notifyLocked()
	// Send a copy: the outstanding task stays the Server's.
	return outgoing{task: proto.CloneOf(q.task)}, true
}

// unsend undoes nextLocked for a task whose send failed: the task goes back
// to the front of the queue and no longer counts as outstanding.
func (s *Server) unsend(ts *taskStream, o outgoing) {
	if o.task == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := taskKey(o.task)
	tasks := ts.outstanding[key]
	if len(tasks) == 0 {
		return // its result arrived meanwhile
	}
	task := tasks[len(tasks)-1]
	if len(tasks) == 1 {
		delete(ts.outstanding, key)
	} else {
		ts.outstanding[key] = tasks[:len(tasks)-1]
	}
	ts.outstandingCount--
	back := &queued{task: task}
	// A cancellation waiting to follow it goes back with it.
	for i, c := range ts.cancellations {
		if c.GetTaskId() == task.GetTaskId() || c.GetTaskId() == key {
			back.cancellation = c
			ts.cancellations = slices.Delete(ts.cancellations, i, i+1)
			break
		}
	}
	s.queues[ts.executorID] = slices.Insert(s.queues[ts.executorID], 0, back)
	s.notifyLocked()
}

// releaseLocked ends the outstanding deliveries of key on every open stream:
// its result has arrived. s.mu must be held.
func (s *Server) releaseLocked(key string) {
	for ts := range s.streams {
		if tasks, ok := ts.outstanding[key]; ok {
			ts.outstandingCount -= len(tasks)
			delete(ts.outstanding, key)
		}
	}
}
