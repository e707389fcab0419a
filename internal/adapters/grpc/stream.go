package grpc

import (
	"context"
	"log/slog"
	"math"

	ggrpc "google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
)

// StreamSource pulls tasks with StreamTasks, one stream per executor type
// served over gRPC. Each stream asks for the runtime's free capacity (workers
// and queue) when it opens; when the runtime is nevertheless full (another
// stream took the room), the source stops reading and gRPC flow control
// pushes back on the engine. Streams are reopened as described on puller. Tasks it
// delivers are not redeliverable: the engine reassigns a task whose result
// never comes.
type StreamSource struct {
	puller
}

var (
	_ ports.TaskSource     = (*StreamSource)(nil)
	_ ports.HealthReporter = (*StreamSource)(nil)
)

func newStreamSource(cfg pullConfig) *StreamSource {
	s := &StreamSource{puller: newPuller(cfg, "stream")}
	s.session = s.stream
	return s
}

func (s *StreamSource) stream(ctx context.Context, intake ports.Intake, reg domain.Registration, free int, log *slog.Logger) (int, error) {
	streamCtx, cancel := s.streamContext(ctx, reg.ExecutorID)
	defer cancel()
	stream, err := s.cfg.client.StreamTasks(streamCtx, &gamelanv1.StreamTasksRequest{
		ExecutorId:    reg.ExecutorID,
		MaxConcurrent: int32(min(free, math.MaxInt32)),
	}, ggrpc.ForceCodecV2(frameCodec{}))
	if err != nil {
		return 0, callError("stream tasks", err)
	}
	// The stream is open: up once it proves itself (see streamProof), even
	// before the first task, so that an idle executor is ready.
	s.state.opened(reg.ExecutorID)
	delivered := 0
	for {
		var f frame
		if err := stream.RecvMsg(&f); err != nil {
			return delivered, endOfStream("stream tasks", ctx, streamCtx, err)
		}
		s.state.received(reg.ExecutorID)
		task, malformed := decodeTask(f.data)
		// The task came on this executor's stream: the engine sent it to
		// this executor id, a routing hint the runtime checks against the
		// task's declared type.
		task.ExecutorID = reg.ExecutorID
		if err := s.cfg.offerPulled(ctx, intake, task, malformed, log); err != nil {
			return delivered, err
		}
		delivered++
	}
}
