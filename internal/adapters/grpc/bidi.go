package grpc

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	ggrpc "google.golang.org/grpc"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
)

// BidiSource takes tasks over ExecuteStream, one stream per executor type
// served over gRPC. A stream opens with a heartbeat naming its executor id
// (which identifies the stream to the engine); each task that arrives is
// offered to the runtime and acknowledged on the stream once accepted; a
// TaskCancellation cancels the task: a running handler's context, a queued
// task before it starts, or a task still waiting on the stream for room,
// which is then answered CANCELLED without being offered. Reconnection
// follows the same backoff rules as StreamSource.
//
// Results are not written on the stream: they go through ReportResults
// only, whose Empty is an acknowledgement, where a stream write is not (a
// copy on the stream could only be best effort, dropped when the engine
// reads slowly, so an engine reading both would see a partial set).
//
// Receiving never waits for room in the runtime: tasks wait for room in a
// queue of the stream's own, bounded by the executor type's max concurrent
// tasks (what the engine may have in flight on it), while messages behind
// them, cancellations above all, are read and applied at once. Only an
// engine that sends beyond that bound is pushed back on by flow control.
type BidiSource struct {
	puller
}

var (
	_ ports.TaskSource     = (*BidiSource)(nil)
	_ ports.HealthReporter = (*BidiSource)(nil)
)

func newBidiSource(cfg pullConfig) *BidiSource {
	b := &BidiSource{puller: newPuller(cfg, "bidi")}
	b.session = b.stream
	return b
}

// stream runs one ExecuteStream session: this goroutine offers the tasks
// that receive queues, in order, and acknowledges them.
func (b *BidiSource) stream(ctx context.Context, intake ports.Intake, reg domain.Registration, _ int, log *slog.Logger) (int, error) {
	streamCtx, cancel := b.streamContext(ctx, reg.ExecutorID)
	defer cancel()
	stream, err := b.cfg.client.ExecuteStream(streamCtx, ggrpc.ForceCodecV2(frameCodec{}))
	if err != nil {
		return 0, callError("execute stream", err)
	}
	// This goroutine is the stream's one sender (grpc-go allows one at a
	// time): the hello, then the acknowledgements.
	hello := &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{
		Heartbeat: heartbeatToProto(domain.Heartbeat{ExecutorID: reg.ExecutorID, Status: domain.HealthHealthy}),
	}}
	if err := stream.Send(hello); err != nil {
		return 0, callError("execute stream", err)
	}
	// The stream is open: up once it proves itself (see streamProof), even
	// before the first task, so that an idle executor is ready.
	b.state.opened(reg.ExecutorID)

	waiting := newWaitingTasks(max(1, reg.Descriptor.MaxConcurrentTasks))
	received := make(chan error, 1)
	go func() { received <- b.receive(ctx, streamCtx, stream, intake, waiting, reg, log) }()
	delivered := 0
	for {
		task, ok := waiting.next()
		if !ok {
			break // receiving ended and every task it queued was taken
		}
		taken, err := b.offer(ctx, intake, waiting, task, log)
		if err != nil {
			cancel() // receive stops at once; tasks still queued are never acknowledged
			<-received
			// The runtime is stopping: the tasks received and not offered are
			// answered at once (retryable SHUTDOWN, or CANCELLED), so that
			// the engine runs them elsewhere without waiting for their
			// timeouts.
			b.cfg.answer(log, waiting.drop()...)
			return delivered, err
		}
		delivered++
		if !taken {
			continue // answered (cancelled while it waited) or refused: not acknowledged
		}
		ack := &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Ack{Ack: &gamelanv1.TaskAcknowledgement{
			TaskId: task.task.ID(), AcknowledgedAt: timestamppb.Now(),
		}}}
		if err := stream.Send(ack); err != nil && streamCtx.Err() == nil {
			log.Debug("task acknowledgement not sent: the stream ended", slog.Any("error", err))
		}
	}
	return delivered, <-received
}

// offer offers one waiting task once the runtime has room (ports.Pull),
// unless the engine cancelled it meanwhile: then it is answered CANCELLED
// instead. It reports whether the runtime took the task (to be
// acknowledged).
func (b *BidiSource) offer(ctx context.Context, intake ports.Intake, waiting *waitingTasks, w *waitingTask, log *slog.Logger) (bool, error) {
	defer w.stopWaiting()
	// The wait for room ends early if the engine cancels w (w.ctx ends
	// with its cancellation); the Offer itself runs under the queue's lock,
	// so that a cancellation either finds the task waiting or finds it in
	// the runtime.
	err := ports.Pull(w.ctx, intake, func(context.Context) error {
		return waiting.take(w, func() error {
			return intake.Offer(ctx, ports.Delivery{Task: w.task, Malformed: w.malformed})
		})
	})
	if reason := waiting.cancelled(w); reason != "" {
		b.cfg.answer(log, unrun{task: w.task, cancelled: reason})
		return false, nil
	}
	return err == nil, b.cfg.offerOutcome(w.task, err, log)
}

// receive reads the stream until it ends, queueing tasks and applying
// cancellations at once, and returns why it ended (nil for a normal end).
func (b *BidiSource) receive(ctx, streamCtx context.Context, stream gamelanv1.ExecutorService_ExecuteStreamClient,
	intake ports.Intake, waiting *waitingTasks, reg domain.Registration, log *slog.Logger) error {
	defer waiting.close()
	for {
		var f frame
		if err := stream.RecvMsg(&f); err != nil {
			return endOfStream("execute stream", ctx, streamCtx, err)
		}
		b.state.received(reg.ExecutorID)
		msg, err := decodeEngineMessage(f.data)
		switch {
		case err != nil:
			b.cfg.refusals.Log(log, slog.LevelWarn, "undecodable", "message from the engine ignored", slog.Any("error", err))
		case msg.task != nil:
			// The task came on this executor's stream: a routing hint the
			// runtime checks against the task's declared type.
			msg.task.ExecutorID = reg.ExecutorID
			if !waiting.put(streamCtx, newWaitingTask(ctx, msg.task, msg.malformed)) {
				return nil // the session is ending
			}
		case msg.cancellation != nil:
			id, reason := msg.cancellation.GetTaskId(), domain.Clip(msg.cancellation.GetReason(), domain.MaxErrorMessageBytes)
			if reason == "" {
				reason = "cancelled by the engine"
			}
			found := waiting.cancel(id, reason)
			if !found {
				found = intake.Cancel(id, reason)
			}
			log.Info("cancellation from the engine", slog.String("task_id", id), slog.Bool("found", found))
		default:
			log.Info("configuration update from the engine ignored: executors are configured by environment")
		}
	}
}

// waitingTask is a task received on a bidi stream and not yet offered.
// Its unrun holds the task and, once the engine cancelled it, the reason.
type waitingTask struct {
	unrun
	malformed error
	// ctx ends when the source stops, or when the engine cancels the task,
	// which then stops waiting for room; stopWaiting releases it. It does
	// not end with the stream: a task received before its stream ended is
	// still offered (its result goes through ReportResults).
	ctx         context.Context
	stopWaiting context.CancelFunc
}

func newWaitingTask(ctx context.Context, task *domain.Task, malformed error) *waitingTask {
	w := &waitingTask{unrun: unrun{task: task}, malformed: malformed}
	w.ctx, w.stopWaiting = context.WithCancel(ctx)
	return w
}

// waitingTasks is a bidi stream's queue of received tasks waiting for room
// in the runtime: receive puts, the session's goroutine takes them in order,
// and a cancellation marks a waiting task so that it is answered instead of
// offered. It is bounded: put blocks while it is full.
type waitingTasks struct {
	queue chan *waitingTask

	mu   sync.Mutex
	byID map[string]*waitingTask // queued or taken by next, not yet offered
}

func newWaitingTasks(limit int) *waitingTasks {
	return &waitingTasks{queue: make(chan *waitingTask, limit), byID: make(map[string]*waitingTask)}
}

// put queues w, waiting while the queue is full; it returns false if ctx
// ends first.
func (q *waitingTasks) put(ctx context.Context, w *waitingTask) bool {
	q.mu.Lock()
	q.byID[w.task.ID()] = w
	q.mu.Unlock()
	select {
	case q.queue <- w:
		return true
	case <-ctx.Done():
		q.forget(w)
		w.stopWaiting()
		return false
	}
}

// close says that no more tasks will be put. Only the putter calls it.
func (q *waitingTasks) close() { close(q.queue) }

// next returns the next queued task, waiting for one; false once the queue
// is closed and empty.
func (q *waitingTasks) next() (*waitingTask, bool) {
	w, ok := <-q.queue
	return w, ok
}

// drop releases the tasks still queued, once the putter has closed the
// queue, and returns them: they will not be offered.
func (q *waitingTasks) drop() []unrun {
	var dropped []unrun
	for w := range q.queue {
		q.forget(w)
		w.stopWaiting()
		dropped = append(dropped, w.unrun) // no cancellation can come: receiving has ended
	}
	return dropped
}

// cancel marks the waiting task with that id cancelled, and reports
// whether there was one.
func (q *waitingTasks) cancel(id, reason string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.byID[id]
	if w == nil {
		return false
	}
	w.cancelled = reason
	w.stopWaiting()
	return true
}

// cancelled forgets w and returns the engine's reason if it cancelled w,
// else "".
func (q *waitingTasks) cancelled(w *waitingTask) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.cancelled != "" {
		q.forgetLocked(w)
	}
	return w.cancelled
}

// errCancelledWhileWaiting is what take returns for a task the engine
// cancelled: w.ctx has ended with the cancellation, so ports.Pull returns.
var errCancelledWhileWaiting = errors.New("cancelled by the engine while waiting for room")

// take ends w's wait: if it was cancelled it returns
// errCancelledWhileWaiting without offering it; else it calls offer under
// the lock, so that a cancellation never falls between the queue and the
// runtime, and forgets w unless the offer was refused for want of room (w
// then waits on).
func (q *waitingTasks) take(w *waitingTask, offer func() error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.cancelled != "" {
		return errCancelledWhileWaiting
	}
	err := offer()
	if !errors.Is(err, domain.ErrOverloaded) {
		q.forgetLocked(w)
	}
	return err
}

func (q *waitingTasks) forget(w *waitingTask) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgetLocked(w)
}

func (q *waitingTasks) forgetLocked(w *waitingTask) {
	if id := w.task.ID(); q.byID[id] == w {
		delete(q.byID, id)
	}
}
