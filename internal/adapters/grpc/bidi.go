package grpc

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
)

// BidiSource takes tasks over ExecuteStream, one stream per executor type
// served over gRPC. A stream opens with a heartbeat naming its executor id
// (which identifies the stream to the engine); each task that arrives is
// offered to the runtime and acknowledged on the stream once accepted; a
// TaskCancellation cancels the running handler's context, which yields a
// CANCELLED result. Results are written back on the stream by the bidi
// ResultSink (see NewBidiResultSink) and also delivered through
// ReportResults, because a stream write is not an acknowledgement.
// Reconnection follows the same backoff rules as StreamSource.
type BidiSource struct {
	puller

	mu      sync.Mutex
	senders map[string]*bidiSender // executor id -> its live stream
}

var (
	_ ports.TaskSource     = (*BidiSource)(nil)
	_ ports.HealthReporter = (*BidiSource)(nil)
)

func newBidiSource(cfg pullConfig) *BidiSource {
	b := &BidiSource{puller: newPuller(cfg, "bidi"), senders: make(map[string]*bidiSender)}
	b.session = b.stream
	return b
}

// bidiSender is the one writer of a stream (grpc-go allows one sender at a
// time): messages queue on out and a goroutine sends them, so that an engine
// slow to read stalls the queue, not the callers. Acknowledgements wait for
// room; mirrored results are dropped when there is none.
type bidiSender struct {
	out  chan *gamelanv1.ExecutorMessage
	done chan struct{} // closed when the writer stops
	err  error         // why it stopped; read after done
}

// mirrorQueue bounds the messages waiting for a slow engine.
const mirrorQueue = 64

func startBidiSender(ctx context.Context, stream gamelanv1.ExecutorService_ExecuteStreamClient) *bidiSender {
	s := &bidiSender{out: make(chan *gamelanv1.ExecutorMessage, mirrorQueue), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			case msg := <-s.out:
				if err := stream.Send(msg); err != nil {
					s.err = err
					return
				}
			}
		}
	}()
	return s
}

// send queues msg, waiting for room; it fails once the writer stopped.
func (s *bidiSender) send(msg *gamelanv1.ExecutorMessage) error {
	select {
	case <-s.done:
		return s.err
	default:
	}
	select {
	case s.out <- msg:
		return nil
	case <-s.done:
		return s.err
	}
}

// offer queues msg if there is room, and reports whether it did.
func (s *bidiSender) offer(msg *gamelanv1.ExecutorMessage) bool {
	select {
	case s.out <- msg:
		return true
	default:
		return false
	}
}

// mirror offers results to the live stream of the executor that produced
// them, without waiting: the stream is a courtesy to the engine, the
// acknowledged ReportResults delivery follows either way. A result that
// fits in ReportResults but not in an ExecutorMessage (a few bytes more)
// is not mirrored: grpc-go would end the stream over it.
func (b *BidiSource) mirror(executorID string, results []*gamelanv1.TaskResult) {
	b.mu.Lock()
	sender := b.senders[executorID]
	b.mu.Unlock()
	if sender == nil {
		return
	}
	for _, r := range results {
		msg := &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Result{Result: r}}
		if proto.Size(msg) <= b.cfg.maxMessageSize {
			sender.offer(msg)
		}
	}
}

// stream runs one ExecuteStream session.
func (b *BidiSource) stream(ctx context.Context, intake ports.Intake, reg domain.Registration, _ int, log *slog.Logger) (int, error) {
	streamCtx, cancel := b.streamContext(ctx, reg.ExecutorID)
	defer cancel()
	stream, err := b.cfg.client.ExecuteStream(streamCtx)
	if err != nil {
		return 0, callError("execute stream", err)
	}
	sender := startBidiSender(streamCtx, stream)
	defer func() { cancel(); <-sender.done }()
	hello := &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{
		Heartbeat: heartbeatToProto(domain.Heartbeat{ExecutorID: reg.ExecutorID, Status: domain.HealthHealthy}),
	}}
	if err := sender.send(hello); err != nil {
		return 0, callError("execute stream", err)
	}
	// The stream is open: connected, even before the first task (an idle
	// executor is ready). If the engine refuses it, Recv says so next.
	b.state.set(reg.ExecutorID, nil)
	b.mu.Lock()
	b.senders[reg.ExecutorID] = sender
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if b.senders[reg.ExecutorID] == sender {
			delete(b.senders, reg.ExecutorID)
		}
		b.mu.Unlock()
	}()

	delivered := 0
	for {
		msg, err := stream.Recv()
		if err != nil {
			return delivered, endOfStream("execute stream", ctx, streamCtx, err)
		}
		b.state.set(reg.ExecutorID, nil)
		switch m := msg.GetMessage().(type) {
		case *gamelanv1.EngineMessage_Task:
			task := taskFromProto(m.Task)
			if task.ExecutorID == "" {
				task.ExecutorID = reg.ExecutorID
			}
			if err := b.cfg.offerPulled(ctx, intake, task, log); err != nil {
				return delivered, err
			}
			delivered++
			ack := &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Ack{Ack: &gamelanv1.TaskAcknowledgement{
				TaskId: task.ID(), AcknowledgedAt: timestamppb.Now(),
			}}}
			if err := sender.send(ack); err != nil {
				return delivered, callError("execute stream", err)
			}
		case *gamelanv1.EngineMessage_Cancellation:
			found := intake.Cancel(m.Cancellation.GetTaskId(), m.Cancellation.GetReason())
			log.Info("cancellation from the engine", slog.String("task_id", m.Cancellation.GetTaskId()), slog.Bool("found", found))
		case *gamelanv1.EngineMessage_ConfigUpdate:
			log.Info("configuration update from the engine ignored: executors are configured by environment")
		}
	}
}
