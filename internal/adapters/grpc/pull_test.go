package grpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Tests of the pull intakes (StreamTasks and ExecuteStream) beyond the
// contract suite: what they ask the engine for, how they reconnect, and
// what the bidi stream carries back.

// engineTask is a task for the tax executor as the engine sends it.
func engineTask(runID, nodeID string) *gamelanv1.ExecutionTask {
	return &gamelanv1.ExecutionTask{
		TaskId: runID + "-" + nodeID, RunId: runID, NodeId: nodeID, NodeType: taxNodeType,
		Attempt: 1, ExecutionToken: "token-" + nodeID,
	}
}

// waitOffered waits until intake has accepted a task with the given node id.
func waitOffered(t *testing.T, intake *porttest.Intake, nodeID string) *porttest.Offered {
	t.Helper()
	var offered *porttest.Offered
	err := intake.WaitUntil(testContext(t), func() bool {
		for _, o := range intake.Offers() {
			if o.Task.NodeID == nodeID {
				offered = o
				return true
			}
		}
		return false
	})
	require.NoError(t, err, "wait for task %s to be offered; %s", nodeID, intake)
	return offered
}

// TestStreamTasksAsksForFreeCapacity checks that StreamTasks asks for the
// runtime's free capacity when it opens, as the engine received it. Since
// commit 8939026 the executor type's MaxConcurrentTasks no longer bounds it
// (it bounds execution, and the free capacity counts workers and queue).
func TestStreamTasksAsksForFreeCapacity(t *testing.T) {
	cases := []struct {
		name                    string
		capacity, held, maxConc int
		want                    int32
	}{
		{name: "whole capacity", capacity: 5, maxConc: 10, want: 5},
		{name: "room left", capacity: 5, held: 2, maxConc: 10, want: 3},
		{name: "not bounded by max concurrent tasks", capacity: 5, maxConc: 3, want: 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			engine, conn := startEngine(t)
			reg := taxRegistration()
			reg.Descriptor.MaxConcurrentTasks = tc.maxConc
			intake := porttest.NewIntake(tc.capacity)
			for i := range tc.held { // tasks the runtime holds from elsewhere
				task := domain.Task{RunID: "held", NodeID: fmt.Sprintf("held-%d", i), Attempt: 1}
				require.NoError(t, intake.Offer(t.Context(), ports.Delivery{Task: &task}))
			}
			source, _ := newTestIntake(t, conn, IntakeStream, reg, fastReconnect)
			startSource(t, source, intake)

			require.Eventually(t, func() bool { return len(engine.StreamMaxConcurrent(taxExecutorID)) > 0 },
				waitTimeout, time.Millisecond, "no StreamTasks call reached the engine")
			assert.Equal(t, tc.want, engine.StreamMaxConcurrent(taxExecutorID)[0], "max_concurrent of the first StreamTasks call")
		})
	}
}

// TestStreamTasksReopensWithTheRoomLeft checks that a stream reopened (here
// at the end of its lifetime) asks for the room left then, not for the
// capacity.
func TestStreamTasksReopensWithTheRoomLeft(t *testing.T) {
	engine, conn := startEngine(t)
	source, _, err := NewIntake(conn, newPushServer(t, ServerConfig{}), IntakeConfig{
		Mode:           IntakeStream,
		Executors:      []domain.Registration{taxRegistration()},
		Reconnect:      fastReconnect,
		StreamLifetime: 50 * time.Millisecond,
	}, testLogger())
	require.NoError(t, err)
	engine.Enqueue(taxExecutorID, engineTask("run-room", "a"), engineTask("run-room", "b"), engineTask("run-room", "c"))
	intake := porttest.NewIntake(4)
	startSource(t, source, intake)
	for _, node := range []string{"a", "b", "c"} {
		waitOffered(t, intake, node)
	}

	// The three tasks stay unsettled: every stream opened from now on must
	// ask for the one slot left.
	before := len(engine.StreamMaxConcurrent(taxExecutorID))
	require.Eventually(t, func() bool { return len(engine.StreamMaxConcurrent(taxExecutorID)) > before },
		waitTimeout, time.Millisecond, "the stream was not reopened after its lifetime")
	asked := engine.StreamMaxConcurrent(taxExecutorID)
	assert.Equal(t, int32(4), asked[0], "first StreamTasks call, with the intake empty")
	assert.Equal(t, int32(1), asked[before], "StreamTasks call with 3 of 4 slots taken")
}

// TestStreamTasksCompletedAtOnceIsNotAHotLoop checks that an engine whose
// StreamTasks ends at once, as Gamelan's does, is polled with the
// exponential backoff: with Initial 20ms, Multiplier 2 and no jitter, the
// 5th call comes at least 20+40+80+160 ms after the 1st. The times are
// taken on the engine as each call arrives, so the bound is exact whatever
// the machine's speed.
func TestStreamTasksCompletedAtOnceIsNotAHotLoop(t *testing.T) {
	var (
		mu    sync.Mutex
		calls []time.Time
	)
	recordCalls := func(srv any, ss ggrpc.ServerStream, info *ggrpc.StreamServerInfo, handler ggrpc.StreamHandler) error {
		if info.FullMethod == gamelanv1.ExecutorService_StreamTasks_FullMethodName {
			mu.Lock()
			calls = append(calls, time.Now())
			mu.Unlock()
		}
		return handler(srv, ss)
	}
	engine, conn := startEngine(t,
		grpctest.WithStreamTasksCompletesImmediately(),
		grpctest.WithServerOptions(ggrpc.ChainStreamInterceptor(recordCalls)))
	backoff := domain.Backoff{Initial: 20 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0}
	source, _ := newTestIntake(t, conn, IntakeStream, taxRegistration(), backoff)
	startSource(t, source, porttest.NewIntake(4))

	require.Eventually(t, func() bool { return engine.StreamCalls(taxExecutorID) >= 5 },
		waitTimeout, time.Millisecond, "the stream was not reopened 5 times")
	mu.Lock()
	first, fifth := calls[0], calls[4]
	mu.Unlock()
	const atLeast = (20 + 40 + 80 + 160) * time.Millisecond
	assert.GreaterOrEqual(t, fifth.Sub(first), atLeast, "time between the 1st and the 5th StreamTasks call")
	require.NoError(t, source.Healthy(), "a stream the engine ends normally is healthy")
}

// TestStreamSourceReconnectsAfterEngineRestart stops the engine under an
// open stream and brings it back on the same address: the source reports
// unhealthy meanwhile, reconnects, reports healthy, and receives the tasks
// queued while the engine was down and after it came back.
func TestStreamSourceReconnectsAfterEngineRestart(t *testing.T) {
	engine, conn := startEngine(t)
	source, _ := newTestIntake(t, conn, IntakeStream, taxRegistration(), fastReconnect)
	intake := porttest.NewIntake(10)
	startSource(t, source, intake)

	require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 1 }, waitTimeout, time.Millisecond, "no stream opened")
	require.Eventually(t, func() bool { return source.Healthy() == nil }, waitTimeout, time.Millisecond,
		"an open stream with no task yet is not healthy")
	engine.Enqueue(taxExecutorID, engineTask("run-restart", "before"))
	waitOffered(t, intake, "before")

	addr := engine.Addr()
	engine.Stop()
	require.Eventually(t, func() bool { return source.Healthy() != nil }, waitTimeout, time.Millisecond,
		"the source reports healthy while the engine is down")
	engine.Enqueue(taxExecutorID, engineTask("run-restart", "while-down"))

	engine.StartAt(t, addr)
	engine.Enqueue(taxExecutorID, engineTask("run-restart", "after"))
	waitOffered(t, intake, "while-down")
	waitOffered(t, intake, "after")
	require.Eventually(t, func() bool { return source.Healthy() == nil }, waitTimeout, time.Millisecond,
		"the source does not report healthy after reconnecting")
	assert.Len(t, intake.Offers(), 3, "tasks offered")
}

// TestBidiAcknowledgesAndCancels checks the ExecuteStream exchange: the
// stream opens with a heartbeat naming the executor, each accepted task is
// acknowledged on the stream, the engine's cancellation reaches
// Intake.Cancel with the task id and reason, and results are written on the
// stream as well as delivered through ReportResults.
func TestBidiAcknowledgesAndCancels(t *testing.T) {
	engine, conn := startEngine(t)
	require.NoError(t, NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Register(testContext(t), taxRegistration()))
	source, sink := newTestIntake(t, conn, IntakeBidi, taxRegistration(), fastReconnect)
	intake := porttest.NewIntake(4)
	startSource(t, source, intake)

	task := engineTask("run-bidi", "a")
	engine.Enqueue(taxExecutorID, task)
	offered := waitOffered(t, intake, "a")
	assert.Equal(t, taxExecutorID, offered.Task.ExecutorID, "executor id of a streamed task")
	require.Eventually(t, func() bool {
		for _, ack := range engine.Acks(taxExecutorID) {
			if ack.GetTaskId() == task.GetTaskId() && ack.GetAcknowledgedAt() != nil {
				return true
			}
		}
		return false
	}, waitTimeout, time.Millisecond, "no acknowledgement of task %s", task.GetTaskId())
	beats := engine.Heartbeats(taxExecutorID)
	require.NotEmpty(t, beats, "heartbeats on the stream")
	assert.Equal(t, domain.HealthHealthy, beats[0].GetHealth().GetStatus(), "the stream's opening heartbeat")

	const reason = "run aborted"
	require.True(t, engine.Cancel(task.GetTaskId(), reason), "the engine found no stream carrying the task")
	err := intake.WaitUntil(testContext(t), func() bool { return len(intake.Cancels()) > 0 })
	require.NoError(t, err, "no Intake.Cancel; %s", intake)
	assert.Equal(t, porttest.CancelCall{TaskID: task.GetTaskId(), Reason: reason, Found: true}, intake.Cancels()[0])

	result := domain.ResultFor(&offered.Task, domain.StatusCancelled)
	result.ExecutorID = offered.Task.ExecutorID
	result.Error = &domain.ErrorInfo{Code: domain.CodeCancelled, Message: reason}
	require.NoError(t, sink.Deliver(testContext(t), []domain.Result{result}))
	require.Eventually(t, func() bool { return len(engine.Results()) == 1 }, waitTimeout, time.Millisecond,
		"the result was not received through ReportResults")
	assert.Zero(t, engine.DuplicateResults(), "results go through ReportResults only, never copied on the stream")
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_CANCELLED, engine.UniqueResults()[domain.IdempotencyKey("run-bidi", "a", 1)].GetStatus())
}

// TestPullSourceStopEndsStreams checks that Stop closes the engine streams
// and returns only when no further Offer can follow.
func TestPullSourceStopEndsStreams(t *testing.T) {
	for _, mode := range []string{IntakeStream, IntakeBidi} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			engine, conn := startEngine(t)
			require.NoError(t, NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Register(testContext(t), taxRegistration()))
			source, _ := newTestIntake(t, conn, mode, taxRegistration(), fastReconnect)
			intake := porttest.NewIntake(4)
			require.NoError(t, source.Start(t.Context(), intake))
			require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 1 }, waitTimeout, time.Millisecond)

			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			require.NoError(t, source.Stop(ctx))
			require.NoError(t, source.Stop(ctx), "second Stop")
			require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 0 }, waitTimeout, time.Millisecond,
				"the engine still holds a stream after Stop")
			assert.Zero(t, intake.Attempts(), "offers")
		})
	}
}

// TestRefusedStreamedTasksAreAnswered checks that a streamed task the
// runtime will not take, which the stream cannot hand back, is answered at
// once: an invalid one is offered for the runtime to answer FAILED
// INVALID_TASK (it is not refusable: the engine waits for no answer to it),
// and one refused while the runtime drains is answered here with a
// retryable FAILED SHUTDOWN; the tasks around them are unaffected.
func TestRefusedStreamedTasksAreAnswered(t *testing.T) {
	engine, conn := startEngine(t)
	intake := porttest.NewIntake(10)
	source, _ := newTestIntake(t, conn, IntakeStream, taxRegistration(), fastReconnect)
	startSource(t, source, intake)

	bad := &gamelanv1.ExecutionTask{TaskId: "bad", RunId: "run-refused", NodeId: "bad", Attempt: -1}
	good := &gamelanv1.ExecutionTask{TaskId: "good", RunId: "run-refused", NodeId: "good", Attempt: 1}
	engine.Enqueue(taxExecutorID, bad, good)
	require.Eventually(t, func() bool { return len(intake.Offers()) == 2 }, waitTimeout, time.Millisecond)
	offers := intake.Offers()
	assert.Equal(t, "bad", offers[0].Task.NodeID)
	assert.False(t, offers[0].Refusable, "a streamed task is answered, never refused")
	require.ErrorIs(t, offers[0].Invalid, domain.ErrInvalidTask)
	assert.Equal(t, "good", offers[1].Task.NodeID)
	assert.NoError(t, offers[1].Invalid)

	intake.Drain()
	engine.Enqueue(taxExecutorID, &gamelanv1.ExecutionTask{TaskId: "late", RunId: "run-refused", NodeId: "late", Attempt: 1})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, engine.WaitForResults(ctx, 1))
	late := engine.UniqueResults()["run-refused:late:1"]
	require.NotNil(t, late, "the task refused while draining was not answered")
	assert.Equal(t, domain.CodeShutdown, late.GetError().GetCode())
	assert.True(t, late.GetError().GetContext().AsMap()["retryable"].(bool))
}

// TestStreamedTaskIsOfferedAgainAfterAnUnexpectedError checks that an
// Offer failing with an error the Intake contract does not name is retried
// (ports.Pull): the streamed task, which cannot be handed back, is not lost.
func TestStreamedTaskIsOfferedAgainAfterAnUnexpectedError(t *testing.T) {
	engine, conn := startEngine(t)
	intake := porttest.NewIntake(4)
	intake.RefuseNext(errors.New("runtime hiccup"))
	source, _ := newTestIntake(t, conn, IntakeStream, taxRegistration(), fastReconnect)
	startSource(t, source, intake)

	engine.Enqueue(taxExecutorID, engineTask("run-hiccup", "a"))
	waitOffered(t, intake, "a")
	require.Len(t, intake.Refusals(), 1, "the failed offer")
	assert.Equal(t, "a", intake.Refusals()[0].Task.NodeID)
}
