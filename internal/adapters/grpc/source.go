package grpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	ggrpc "google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// Intake modes: the push server always runs; stream and bidi add a pull
// intake beside it.
const (
	IntakePush   = "push"
	IntakeStream = "stream"
	IntakeBidi   = "bidi"
)

// IntakeConfig configures the gRPC task intake.
type IntakeConfig struct {
	// Mode is IntakePush, IntakeStream or IntakeBidi.
	Mode string
	// Executors are the executor types served over gRPC; each gets its own
	// engine stream in stream and bidi modes.
	Executors []domain.Registration
	// Reconnect paces reopening engine streams.
	Reconnect domain.Backoff
	// StreamLifetime, when positive, reopens engine streams this often so
	// that they present a fresh token.
	StreamLifetime time.Duration
	// MaxMessageSize is the largest message sent to the engine
	// (DefaultMaxMessageSize if 0); see NewResultSink.
	MaxMessageSize int
	// Watch, when set, is told of signs that the engine forgot an
	// executor (a stream or ReportResults answered NotFound), and the
	// source reports its signs to the runtime (ports.RegistrationWatcher).
	Watch *ConnectionWatch
}

// TaskSource is the gRPC task intake: the push server, plus the StreamTasks
// or ExecuteStream intake in those modes. Start starts the push intake first;
// Stop stops the pull intake first.
type TaskSource struct {
	push *PushServer
	pull interface {
		ports.TaskSource
		ports.HealthReporter
	}
	watch *ConnectionWatch
}

var (
	_ ports.TaskSource          = (*TaskSource)(nil)
	_ ports.HealthReporter      = (*TaskSource)(nil)
	_ ports.RegistrationWatcher = (*TaskSource)(nil)
)

// NewIntake builds the task source of the chosen mode and the result sink
// that answers its tasks, over a connection to the engine.
func NewIntake(conn ggrpc.ClientConnInterface, push *PushServer, cfg IntakeConfig, log *slog.Logger) (*TaskSource, *ResultSink, error) {
	client := gamelanv1.NewExecutorServiceClient(conn)
	source := &TaskSource{push: push, watch: cfg.Watch}
	sink := NewResultSink(client, cfg.MaxMessageSize)
	pc := pullConfig{client: client, executors: cfg.Executors, reconnect: cfg.Reconnect, streamLifetime: cfg.StreamLifetime,
		sink: sink, maxMessageSize: sink.maxSize, log: log, refusals: telemetry.NewThrottle(0, 0), goaways: &sync.Map{}}
	if cfg.Watch != nil {
		sink.Watching(cfg.Watch)
		pc.suspect = cfg.Watch.Suspect
	}
	switch cfg.Mode {
	case IntakePush:
	case IntakeStream:
		source.pull = newStreamSource(pc)
	case IntakeBidi:
		source.pull = newBidiSource(pc)
	default:
		return nil, nil, fmt.Errorf("grpc intake %q: must be push, stream or bidi", cfg.Mode)
	}
	if source.pull != nil && len(cfg.Executors) == 0 {
		return nil, nil, errors.New("grpc intake: no executor types to stream tasks for")
	}
	return source, sink, nil
}

// Start implements ports.TaskSource.
func (s *TaskSource) Start(ctx context.Context, intake ports.Intake) error {
	if err := s.push.Start(ctx, intake); err != nil {
		return err
	}
	if s.pull != nil {
		return s.pull.Start(ctx, intake)
	}
	return nil
}

// Stop implements ports.TaskSource.
func (s *TaskSource) Stop(ctx context.Context) error {
	var err error
	if s.pull != nil {
		err = s.pull.Stop(ctx)
	}
	return errors.Join(err, s.push.Stop(ctx))
}

// Close implements ports.TaskSource: the pull intake first, then the push
// server.
func (s *TaskSource) Close(ctx context.Context) error {
	var err error
	if s.pull != nil {
		err = s.pull.Close(ctx)
	}
	return errors.Join(err, s.push.Close(ctx))
}

// RegistrationSuspects implements ports.RegistrationWatcher with the
// watch's channel; without a watch it returns nil, a channel that never
// receives.
func (s *TaskSource) RegistrationSuspects() <-chan string {
	if s.watch == nil {
		return nil
	}
	return s.watch.RegistrationSuspects()
}

// Healthy implements ports.HealthReporter: the pull intake's streams must be
// connected; the push server needs no connection of its own.
func (s *TaskSource) Healthy() error {
	if s.pull != nil {
		return s.pull.Healthy()
	}
	return nil
}
