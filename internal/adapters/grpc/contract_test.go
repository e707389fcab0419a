package grpc

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The port contract suites, run against the gRPC adapters and a grpctest
// engine on 127.0.0.1. Every scenario gets its own engine.

func TestResultSinkContract(t *testing.T) {
	porttest.ResultSink(t, func(t *testing.T) porttest.ResultSinkHarness {
		engine, conn := startEngine(t)
		return porttest.ResultSinkHarness{
			Sink: NewResultSink(gamelanv1.NewExecutorServiceClient(conn), 0),
			Received: func() []domain.Result {
				var results []domain.Result
				for _, r := range engine.Results() {
					results = append(results, resultFromProto(r))
				}
				return results
			},
			// FailReportResults adds to the faults not yet used: Restore
			// takes back what Break added, leaving none in force.
			Break:   func() { engine.FailReportResults(math.MaxInt32) },
			Restore: func() { engine.FailReportResults(-math.MaxInt32) },
			// ReportResults left unanswered: the sink must give up when its
			// context ends.
			Hold: engine.HoldReportResults,
			// TaskResult has no executor id and no duration. The retryable
			// flag travels in the error's context Struct.
			Unsupported: []porttest.Field{porttest.FieldResultExecutorID, porttest.FieldResultDuration},
		}
	})
}

func TestRegistrarContract(t *testing.T) {
	porttest.Registrar(t, func(t *testing.T) porttest.RegistrarHarness {
		engine, conn := startEngine(t)
		return porttest.RegistrarHarness{
			Registrar: NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)),
			Lookup: func(executorID string) (domain.Registration, bool) {
				reg, ok := engine.Registration(executorID)
				if !ok {
					return domain.Registration{}, false
				}
				return registrationFromProto(reg), true
			},
			All: func() []domain.Registration {
				var regs []domain.Registration
				for _, reg := range engine.Registrations() {
					regs = append(regs, registrationFromProto(reg))
				}
				return regs
			},
			// RegisterExecutorRequest carries the serving communication
			// type, not the descriptor's declared one, and no version (the
			// version travels in metadata when the runtime puts it there).
			Unsupported: []porttest.Field{
				porttest.FieldRegistrationVersion,
				porttest.FieldRegistrationDescriptorCommunicationType,
			},
		}
	})
}

func TestHeartbeaterContract(t *testing.T) {
	porttest.Heartbeater(t, func(t *testing.T) porttest.HeartbeaterHarness {
		engine, conn := startEngine(t)
		client := gamelanv1.NewExecutorServiceClient(conn)
		return porttest.HeartbeaterHarness{
			Heartbeater: NewHeartbeater(client),
			Registrar:   NewRegistrar(client),
			LastHeartbeat: func(executorID string) (domain.Heartbeat, bool) {
				beats := engine.Heartbeats(executorID)
				if len(beats) == 0 {
					return domain.Heartbeat{}, false
				}
				return heartbeatFromProto(beats[len(beats)-1]), true
			},
			Forget: engine.Forget,
		}
	})
}

// TestPushTaskSourceContract runs the suite against the push intake: the
// engine side pushes each task with Execute, retrying while the executor
// answers 503.
func TestPushTaskSourceContract(t *testing.T) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		engine := pushEngine(t) // pushes only: it need not serve
		push := newPushServer(t, ServerConfig{})
		pushes := newPusher(t, engine, push.Addr().String())
		return porttest.TaskSourceHarness{
			Source: push,
			Publish: func(_ context.Context, task domain.Task) error {
				pushes.publish(pushRequest(task, taxExecutorID))
				return nil
			},
			Push: true,
			// An ExecutionRequest carries run id, node id, attempt, token,
			// idempotency key, string variables and a signature naming the
			// executor: nothing else (the runtime finds the type). The suite's contexts
			// hold numbers, booleans, maps and lists, which string
			// variables cannot carry (pass-through as strings is tested in
			// push_test.go).
			Unsupported: []porttest.Field{
				porttest.FieldTaskID, porttest.FieldTaskNodeName, porttest.FieldTaskNodeType, porttest.FieldTaskExecutorType,
				porttest.FieldTaskConfiguration, porttest.FieldTaskTimeout, porttest.FieldTaskScheduledAt,
				porttest.FieldTaskContext,
			},
		}
	})
}

// TestStreamTaskSourceContract runs the suite against the StreamTasks
// intake, with the tasks queued on the engine.
func TestStreamTaskSourceContract(t *testing.T) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		engine, conn := startEngine(t)
		newSource := func() ports.TaskSource {
			source, sink := newTestIntake(t, conn, IntakeStream, taxRegistration(), fastReconnect)
			return answering(t, source, sink)
		}
		return pullHarness(t, engine, newSource, nil)
	})
}

// TestBidiTaskSourceContract runs the suite against the ExecuteStream
// intake, with the tasks queued on the engine and cancellations sent on the
// stream.
func TestBidiTaskSourceContract(t *testing.T) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		engine, conn := startEngine(t)
		// ExecuteStream serves registered executors only, and the engine
		// keeps at most the registration's max_concurrent_tasks outstanding.
		ctx := testContext(t)
		if err := NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Register(ctx, taxRegistration()); err != nil {
			t.Fatalf("Register: %v", err)
		}
		newSource := func() ports.TaskSource {
			source, sink := newTestIntake(t, conn, IntakeBidi, taxRegistration(), fastReconnect)
			return answering(t, source, sink)
		}
		return pullHarness(t, engine, newSource, engine.Cancel)
	})
}

// pullHarness is the harness of a stream or bidi source: tasks are queued
// for the tax executor, and the successor is another source of the same
// engine queue.
func pullHarness(t *testing.T, engine *grpctest.Engine, newSource func() ports.TaskSource, cancel func(taskID, reason string) bool) porttest.TaskSourceHarness {
	h := porttest.TaskSourceHarness{
		Source: &stopSeenByEngine{TaskSource: newSource(), engine: engine},
		Publish: func(_ context.Context, task domain.Task) error {
			pt, err := taskToProto(task)
			if err != nil {
				return err
			}
			engine.Enqueue(taxExecutorID, pt)
			return nil
		},
		Cancel:     cancel,
		Redelivers: false,
		Successor:  newSource,
		// ExecutionTask has no executor type and no idempotency key; the
		// executor id is the stream's, which the adapter puts on the task
		// (the runtime routes on it).
		Unsupported: []porttest.Field{porttest.FieldTaskExecutorType, porttest.FieldTaskIdempotencyKey},
	}
	if strings.HasSuffix(t.Name(), "/Draining") {
		// A task the engine sent on a stream is outstanding on that stream:
		// when the executor refuses it (draining) and the stream ends, the
		// engine does not requeue it (Gamelan reassigns it after its
		// timeout; grpctest never does). So no successor can prove it was
		// not lost; the scenario still checks that the draining source
		// stops at once.
		h.Successor = nil
	}
	return h
}

// stopSeenByEngine makes Stop return once the engine has seen the source's
// streams close. The adapter's Stop cancels its streams and returns: the
// engine notices a moment later, and a task it sends on a closing stream is
// outstanding there, not requeued (a real engine reassigns it after its
// timeout; the wire has no way to hand it back). The Stop scenario
// publishes right after Stop and expects the successor to get those tasks;
// that holds only once the engine knows the first source has gone, which is
// what a successor taking over waits for in production too (the engine's
// task timeout). The suite starts the successor only after this Stop, and
// stops it before stopping this source at the end of the scenario, so no
// other stream of the executor is open meanwhile.
type stopSeenByEngine struct {
	ports.TaskSource
	engine *grpctest.Engine
}

// Stop implements ports.TaskSource.
func (s *stopSeenByEngine) Stop(ctx context.Context) error {
	if err := s.TaskSource.Stop(ctx); err != nil {
		return err
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for s.engine.OpenStreams(taxExecutorID) > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("the engine still holds %d streams of %s after Stop: %w", s.engine.OpenStreams(taxExecutorID), taxExecutorID, ctx.Err())
		}
	}
	return nil
}
