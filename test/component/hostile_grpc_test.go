package component

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// The regression tests of issue 10 over gRPC: each failure found from
// outside, as a hostile engine and an unlucky operator would meet it, on a
// real gRPC engine (grpctest) and the real service.

// notificationExecutorID is the executor id of notification-sender in the
// services of these tests (NAME-type-INSTANCE_ID).
const notificationExecutorID = "executor-notification-sender-test"

// twoTypesEnv serves calculate-tax and notification-sender over gRPC.
func twoTypesEnv(engineAddr, intake string) map[string]string {
	vars := serviceEnv(engineAddr, intake)
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax,notification-sender"
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	return vars
}

// requireNoExecutorNamingBoth asserts that res is FAILED NO_EXECUTOR and
// that its message names the declared type and the executor the task was
// sent to.
func requireNoExecutorNamingBoth(t *testing.T, res *gamelanv1.TaskResult, declared, executorID string) {
	t.Helper()
	require.NotNil(t, res, "no result")
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, res.GetStatus())
	assert.Equal(t, domain.CodeNoExecutor, res.GetError().GetCode(), "message %q", res.GetError().GetMessage())
	assert.Contains(t, res.GetError().GetMessage(), declared)
	assert.Contains(t, res.GetError().GetMessage(), executorID)
}

// ranHandler reports whether the service logged a handler of executorType
// finishing a task of run runID.
func ranHandler(l *logLines, runID, executorType string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if line["msg"] == "task finished" && line["run_id"] == runID && line["executor_type"] == executorType {
			return true
		}
	}
	return false
}

// Failure 1: a calculate-tax task sent on notification-sender's stream (or
// pushed with its signature) ran notification-sender. Now the declared type
// decides, and the contradiction is answered NO_EXECUTOR naming both.
func TestWrongHandlerNeverRunsOnAContradictingTask(t *testing.T) {
	for _, intake := range []string{"push", "stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			t.Parallel()
			engine := grpctest.NewEngine()
			addr := engine.Start(t)
			r := startService(t, twoTypesEnv(addr, intake))
			endpoint := waitForServing(t, engine, r, notificationExecutorID).GetEndpoint()
			waitForRegistration(t, engine, taxExecutorID)
			const run = "run-contradiction"
			if intake == "push" {
				req := taxPush(run, "tax-node", "100")
				req.Variables[domain.NodeTypeKey] = "calculate-tax"
				req.Signature = grpctest.Signature(run, notificationExecutorID)
				ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, req)
				require.NoError(t, err)
				require.True(t, ack.GetAccepted(), "%v", ack)
			} else {
				engine.Enqueue(notificationExecutorID, taxTask(t, run, "tax-node", "100"))
			}
			waitForUniqueResults(t, engine, 1, conditionTimeout)
			res := engine.UniqueResults()[resultKey(run, "tax-node")]
			requireNoExecutorNamingBoth(t, res, "calculate-tax", notificationExecutorID)
			assert.False(t, ranHandler(r.logs, run, "notification-sender"), "notification-sender ran a calculate-tax task")
			assert.False(t, ranHandler(r.logs, run, "calculate-tax"), "the task ran although its executor contradicts it")

			// The same task sent to its own executor runs.
			if intake == "push" {
				ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush(run, "tax-own", "100"))
				require.NoError(t, err)
				require.True(t, ack.GetAccepted(), "%v", ack)
			} else {
				engine.Enqueue(taxExecutorID, taxTask(t, run, "tax-own", "100"))
			}
			waitForUniqueResults(t, engine, 2, conditionTimeout)
			checkTaxResult(t, engine.UniqueResults()[resultKey(run, "tax-own")], run, "tax-own", "100")
		})
	}
}

// Failure 2: run y, pushed with run x's idempotency key, was acknowledged
// and answered with x's result (or, while x ran, never answered). A key that
// is not the task's own identity is now refused.
func TestPushWithAnotherRunsKeyIsRefused(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	r := startService(t, serviceEnv(addr, "push"))
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	push := func(run, amount, key string) *dispatcherpb.ExecutionAck {
		t.Helper()
		req := taxPush(run, "tax-node", amount)
		req.IdempotencyKey = key
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, req)
		require.NoError(t, err)
		return ack
	}
	for run, amount := range map[string]string{"x": "100", "y": "999"} {
		ack := push(run, amount, "shared:tax-node:1")
		assert.False(t, ack.GetAccepted(), "%s: %v", run, ack)
		assert.EqualValues(t, 400, ack.GetCode(), "%s: %v", run, ack)
		assert.Contains(t, ack.GetMessage(), `idempotency key "shared:tax-node:1"`)
	}
	// With their own keys, each run gets its own result.
	require.True(t, push("x", "100", "x:tax-node:1").GetAccepted())
	require.True(t, push("y", "999", "y:tax-node:1").GetAccepted())
	waitForUniqueResults(t, engine, 2, conditionTimeout)
	checkTaxResult(t, engine.UniqueResults()[resultKey("x", "tax-node")], "x", "tax-node", "100")
	checkTaxResult(t, engine.UniqueResults()[resultKey("y", "tax-node")], "y", "tax-node", "999")
	assert.Len(t, engine.Results(), 2)
}

// Failure 3 (gRPC): pushes whose 2.2 MB run id made results larger than
// any message were accepted, and their results held every result sender
// for ever. Such ids are now refused, and the tasks after them answered.
func TestOversizedIdsCannotStopResultDelivery(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	r := startService(t, serviceEnv(addr, "push"))
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	huge := strings.Repeat("r", 2200<<10)
	for i := range 4 {
		req := taxPush(huge, fmt.Sprintf("n%d", i), "10")
		req.IdempotencyKey, req.Signature = "", "" // the only executor type: routed without them
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, req)
		require.NoError(t, err, "a 2.2 MB request is within the 4 MiB limit")
		assert.EqualValues(t, 400, ack.GetCode(), "%d: %.200s", i, ack.GetMessage())
		assert.Less(t, len(ack.GetMessage()), 500, "the refusal quotes the id clipped")
	}
	const run = "run-after-huge"
	for i := range 20 {
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush(run, fmt.Sprintf("n%d", i), taxAmount(i)))
		require.NoError(t, err)
		require.True(t, ack.GetAccepted(), "%v", ack)
	}
	waitForUniqueResults(t, engine, 20, conditionTimeout)
	for i := range 20 {
		node := fmt.Sprintf("n%d", i)
		checkTaxResult(t, engine.UniqueResults()[resultKey(run, node)], run, node, taxAmount(i))
	}
}

// Failure 3 (gRPC, the general case): an engine whose own message limit is
// lower than ours refuses a large result with ResourceExhausted; that result
// used to be resent for ever, holding a sender each. Now the refused result
// is isolated and answered FAILED OUTPUT_TOO_LARGE, and every other result
// is delivered.
func TestResultTheEngineRefusesForGoodIsReplaced(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine(grpctest.WithServerOptions(grpc.MaxRecvMsgSize(64 << 10)))
	addr := engine.Start(t)
	r := startService(t, twoTypesEnv(addr, "push"))
	endpoint := waitForServing(t, engine, r, notificationExecutorID).GetEndpoint()
	const run = "run-big-results"
	big := strings.Repeat("x", 100<<10) // echoed in the output: 100 KB, within our 4 MiB, beyond the engine's 64 KiB
	send := func(node, recipient string) {
		t.Helper()
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, &dispatcherpb.ExecutionRequest{
			RunId: run, NodeId: node, Attempt: 1, Token: "token-" + node,
			Variables: map[string]string{"recipient": recipient, "message": "hello"},
			Signature: grpctest.Signature(run, notificationExecutorID),
		})
		require.NoError(t, err)
		require.True(t, ack.GetAccepted(), "%v", ack)
	}
	for i := range 6 { // more than the result senders
		send(fmt.Sprintf("big-%d", i), big)
	}
	for i := range 20 {
		send(fmt.Sprintf("small-%d", i), fmt.Sprintf("ops-%d@example.com", i))
	}
	waitForUniqueResults(t, engine, 26, conditionTimeout)
	unique := engine.UniqueResults()
	for i := range 6 {
		res := unique[resultKey(run, fmt.Sprintf("big-%d", i))]
		require.NotNil(t, res)
		assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, res.GetStatus())
		assert.Equal(t, domain.CodeOutputTooLarge, res.GetError().GetCode(), "%s", res.GetError().GetMessage())
		assert.Equal(t, "token-"+res.GetNodeId(), res.GetExecutionToken(), "answered with its own identity")
	}
	for i := range 20 {
		res := unique[resultKey(run, fmt.Sprintf("small-%d", i))]
		require.NotNil(t, res)
		assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%v", res.GetError())
	}
	code, _ := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, http.StatusOK, code)
}

// Failure 7 (gRPC): a streamed task whose context was nested 6,000 levels
// deep ended the stream as undecodable and vanished, with no log line. It is
// now answered FAILED INVALID_TASK by the identity its first fields carry,
// and the stream goes on.
func TestUndecodableStreamedTaskIsAnswered(t *testing.T) {
	for _, intake := range []string{"stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			t.Parallel()
			engine := grpctest.NewEngine()
			addr := engine.Start(t)
			r := startService(t, serviceEnv(addr, intake))
			waitForServing(t, engine, r, taxExecutorID)
			const run = "run-deep"
			deep := taxTask(t, run, "deep", "10")
			deep.Context = nestedStruct(6000)
			engine.Enqueue(taxExecutorID, deep, taxTask(t, run, "after", "20"))
			waitForUniqueResults(t, engine, 2, conditionTimeout)
			res := engine.UniqueResults()[resultKey(run, "deep")]
			require.NotNil(t, res, "the undecodable task was not answered")
			assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, res.GetStatus())
			assert.Equal(t, domain.CodeInvalidTask, res.GetError().GetCode())
			assert.Contains(t, res.GetError().GetMessage(), "could not be decoded")
			assert.Equal(t, "token-deep", res.GetExecutionToken())
			assert.Equal(t, "task-run-deep-deep", res.GetTaskId())
			checkTaxResult(t, engine.UniqueResults()[resultKey(run, "after")], run, "after", "20")
		})
	}
}

// nestedStruct returns {"a": {"a": ... {"a": 1}}} nested depth times.
func nestedStruct(depth int) *structpb.Struct {
	inner := &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewNumberValue(1)}}
	for range depth - 1 {
		inner = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(inner)}}
	}
	return inner
}

// paymentBidiService runs payment-processor over ExecuteStream with room
// for one task at a time, each running until the engine cancels it, and
// returns the engine and a maker of the run's payment tasks.
func paymentBidiService(t *testing.T, run string) (*grpctest.Engine, func(node string) *gamelanv1.ExecutionTask) {
	t.Helper()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := serviceEnv(addr, "bidi")
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=grpc"
	vars["PAYMENT_GATEWAY_DELAY"] = "1h" // runs until cancelled
	vars["GAMELAN_EXECUTOR_THREAD_POOL_SIZE"] = "1"
	vars["GAMELAN_EXECUTOR_QUEUE_SIZE"] = "0"
	r := startService(t, vars)
	waitForServing(t, engine, r, paymentExecutorID)
	return engine, func(node string) *gamelanv1.ExecutionTask {
		ctx, err := structpb.NewStruct(map[string]any{"totalAmount": 10, "customerId": "C-1"})
		require.NoError(t, err)
		return &gamelanv1.ExecutionTask{TaskId: "task-" + node, RunId: run, NodeId: node, NodeType: "payment-processor",
			Attempt: 1, ExecutionToken: "token-" + node, Context: ctx}
	}
}

// The bidi receive loop used to block while waiting for room, so that a
// cancellation behind a waiting task (which would free the room) was never
// read. Now the cancellation is read and applied: the running task is
// cancelled, which frees its slot, and the task that waited runs.
func TestBidiCancellationBehindAWaitingTaskIsRead(t *testing.T) {
	t.Parallel()
	engine, payment := paymentBidiService(t, "run-cancel")
	engine.Enqueue(paymentExecutorID, payment("first"))
	require.Eventually(t, func() bool { return len(engine.Acks(paymentExecutorID)) == 1 }, conditionTimeout, conditionTick)
	// The runtime is full: second waits on the stream for room.
	engine.Enqueue(paymentExecutorID, payment("second"))
	require.Eventually(t, func() bool { return engine.Queued(paymentExecutorID) == 0 }, conditionTimeout, conditionTick)
	require.True(t, engine.Cancel("task-first", "the order was withdrawn"))
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	first := engine.UniqueResults()[resultKey("run-cancel", "first")]
	require.NotNil(t, first)
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_CANCELLED, first.GetStatus())
	// second took the freed room: it is acknowledged, and runs.
	require.Eventually(t, func() bool { return len(engine.Acks(paymentExecutorID)) == 2 }, conditionTimeout, conditionTick,
		"the waiting task was never taken")
	require.True(t, engine.Cancel("task-second", "done"))
	waitForUniqueResults(t, engine, 2, conditionTimeout)
}

// A task cancelled while it still waits on the bidi stream for room is
// answered CANCELLED without running.
func TestBidiTaskCancelledWhileWaitingNeverRuns(t *testing.T) {
	t.Parallel()
	engine, payment := paymentBidiService(t, "run-wait")
	engine.Enqueue(paymentExecutorID, payment("running"), payment("waiting"))
	require.Eventually(t, func() bool { return engine.Queued(paymentExecutorID) == 0 && len(engine.Acks(paymentExecutorID)) == 1 },
		conditionTimeout, conditionTick)
	require.True(t, engine.Cancel("task-waiting", "not needed"))
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	waiting := engine.UniqueResults()[resultKey("run-wait", "waiting")]
	require.NotNil(t, waiting, "the waiting task was not answered")
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_CANCELLED, waiting.GetStatus())
	assert.Equal(t, "not needed", waiting.GetError().GetMessage())
	assert.Len(t, engine.Acks(paymentExecutorID), 1, "the cancelled task was taken, not answered where it waited")
	require.True(t, engine.Cancel("task-running", "done"))
	waitForUniqueResults(t, engine, 2, conditionTimeout)
}
