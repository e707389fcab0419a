package component

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// TestGRPCPushMalformedRequestIsRefused pushes requests without a run id or
// a node id: each is refused with 400 and never runs (a sentinel pushed
// afterwards is answered, and it is the only result the engine ever gets),
// and the service stays ready.
func TestGRPCPushMalformedRequestIsRefused(t *testing.T) {
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()

	malformed := map[string]*dispatcherpb.ExecutionRequest{
		"no run id":            taxPush("", "n1", "10"),
		"no node id":           taxPush("run-bad", "", "10"),
		"neither":              taxPush("", "", "10"),
		"no run id or vars":    {NodeId: "calculate-tax", Attempt: 1},
		"empty request at all": {},
	}
	for name, req := range malformed {
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, req)
		require.NoError(t, err, name)
		assert.False(t, ack.GetAccepted(), "%s: %v", name, ack)
		assert.EqualValues(t, 400, ack.GetCode(), "%s: %v", name, ack)
		assert.NotEmpty(t, ack.GetMessage(), name)
	}

	sentinel := taxPush("run-sentinel", "n1", "50")
	ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, sentinel)
	require.NoError(t, err)
	require.True(t, ack.GetAccepted(), "sentinel: %v", ack)
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	checkTaxResult(t, engine.UniqueResults()[resultKey("run-sentinel", "n1")], "run-sentinel", "n1", "50")
	assert.Len(t, engine.Results(), 1, "a malformed request ran: %v", engine.Results())
	assert.Equal(t, map[string]bool{"n1": true}, finishedNodes(r.logs, "run-sentinel"))
	assert.Equal(t, 1, strings.Count(r.logs.text(), `"msg":"task finished"`), "a malformed request ran")

	code, body := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, http.StatusOK, code, "%+v", body)
	require.NoError(t, r.stop(t))
}

// TestGRPCUnparsableVariablesFailWithInvalidInput sends calculate-tax an
// amount that is not a number through each intake: the result is FAILED
// with INVALID_INPUT (not a crash, not a lost task), and the next task
// completes.
func TestGRPCUnparsableVariablesFailWithInvalidInput(t *testing.T) {
	for _, intake := range []string{"push", "stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			engine := grpctest.NewEngine()
			addr := engine.Start(t)
			r := startService(t, serviceEnv(addr, intake))
			endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
			const run = "run-unparsable"
			send := func(node, amount string) {
				t.Helper()
				if intake == "push" {
					ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush(run, node, amount))
					require.NoError(t, err)
					require.True(t, ack.GetAccepted(), "%s: %v", node, ack)
					return
				}
				task := taxTask(t, run, node, "0")
				task.Context = mustStruct(t, map[string]any{"amount": amount})
				engine.Enqueue(taxExecutorID, task)
			}

			send("bad", "lots")
			waitForUniqueResults(t, engine, 1, conditionTimeout)
			bad := engine.UniqueResults()[resultKey(run, "bad")]
			require.NotNil(t, bad)
			assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, bad.GetStatus())
			assert.Equal(t, domain.CodeInvalidInput, bad.GetError().GetCode())
			assert.Contains(t, bad.GetError().GetMessage(), "amount")
			assert.Equal(t, "token-bad", bad.GetExecutionToken())
			assert.NotNil(t, bad.GetCompletedAt())

			send("good", "12.5")
			waitForUniqueResults(t, engine, 2, conditionTimeout)
			checkTaxResult(t, engine.UniqueResults()[resultKey(run, "good")], run, "good", "12.5")
			waitForStatus(t, r.baseURL, "/q/health/live", http.StatusOK)
			require.NoError(t, r.stop(t))
		})
	}
}

// mustStruct converts m for a task's context.
func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	require.NoError(t, err)
	return s
}

// TestGRPCMessageTooLarge sets GRPC_MAX_MESSAGE_SIZE to its minimum, 1024
// bytes. A larger push is refused with ResourceExhausted and a larger task
// on a StreamTasks stream breaks only that stream; either way the service
// keeps serving and the next normal task is answered.
func TestGRPCMessageTooLarge(t *testing.T) {
	big := strings.Repeat("x", 2048)
	t.Run("push", func(t *testing.T) {
		engine := grpctest.NewEngine()
		addr := engine.Start(t)
		vars := serviceEnv(addr, "push")
		vars["GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE"] = "1024"
		r := startService(t, vars)
		endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()

		oversized := taxPush("run-big", "big", "10")
		oversized.Variables["padding"] = big
		_, err := engine.Push(deadline(t, conditionTimeout), endpoint, oversized)
		require.Error(t, err)
		assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), "larger than max")

		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-big", "small", "10"))
		require.NoError(t, err)
		require.True(t, ack.GetAccepted(), "%v", ack)
		waitForUniqueResults(t, engine, 1, conditionTimeout)
		checkTaxResult(t, engine.UniqueResults()[resultKey("run-big", "small")], "run-big", "small", "10")
		assert.Len(t, engine.Results(), 1, "the oversized push ran")
		require.NoError(t, r.stop(t))
	})
	t.Run("stream", func(t *testing.T) {
		engine := grpctest.NewEngine()
		addr := engine.Start(t)
		vars := serviceEnv(addr, "stream")
		vars["GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE"] = "1024"
		r := startService(t, vars)
		waitForRegistration(t, engine, taxExecutorID)

		require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 1 }, conditionTimeout, conditionTick)
		calls := engine.StreamCalls(taxExecutorID)
		oversized := taxTask(t, "run-big", "big", "10")
		oversized.Context = mustStruct(t, map[string]any{"amount": 10.0, "padding": big})
		engine.Enqueue(taxExecutorID, oversized)
		// The engine does not requeue what was outstanding on a broken
		// stream, so the next task is queued once the service has reopened
		// its stream.
		require.Eventually(t, func() bool { return engine.StreamCalls(taxExecutorID) > calls }, conditionTimeout, conditionTick,
			"the stream was not reopened after the oversized task; logs:\n%s", r.logs.text())
		engine.Enqueue(taxExecutorID, taxTask(t, "run-big", "small", "10"))
		waitForUniqueResults(t, engine, 1, conditionTimeout)
		checkTaxResult(t, engine.UniqueResults()[resultKey("run-big", "small")], "run-big", "small", "10")
		assert.Len(t, engine.Results(), 1, "the oversized task ran")
		assert.Contains(t, r.logs.text(), "ResourceExhausted", "the refusal is logged with its status")
		require.NoError(t, r.stop(t))
	})
}

// TestGRPCPullIntakeIsReadyWhileIdle checks that an executor whose stream
// or bidi intake is connected, and which is registered, is ready before
// the engine has any task for it. Readiness gates the push server too
// (always on): an executor that is not ready while idle is taken out of
// its Kubernetes Service and cannot be pushed to.
func TestGRPCPullIntakeIsReadyWhileIdle(t *testing.T) {
	for _, intake := range []string{"stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			engine := grpctest.NewEngine()
			addr := engine.Start(t)
			r := startService(t, serviceEnv(addr, intake))
			waitForRegistration(t, engine, taxExecutorID)
			require.Eventually(t, func() bool { return engine.OpenStreams(taxExecutorID) == 1 },
				conditionTimeout, conditionTick, "the intake never opened its stream")
			ready := func() bool {
				resp, err := http.Get(r.baseURL + "/q/health/ready")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}
			if !assert.Eventually(t, ready, conditionTimeout/4, 20*conditionTick, "idle %s intake never ready", intake) {
				_, body := probe(t, r.baseURL, "/q/health/ready")
				t.Logf("readiness while the stream is open and idle: %+v", body)
			}
			// Once a task has arrived the stream counts as connected.
			engine.Enqueue(taxExecutorID, taxTask(t, "run-idle", "n1", "1"))
			waitForUniqueResults(t, engine, 1, conditionTimeout)
			waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
			require.NoError(t, r.stop(t))
		})
	}
}
