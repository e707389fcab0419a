package component

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// The regression tests of issue 10 for the REST intake and for the logs.

// restEnv serves calculate-tax and notification-sender over REST,
// registered with and answering to the gRPC engine at engineAddr.
func restEnv(engineAddr string) map[string]string {
	vars := twoTypesEnv(engineAddr, "push")
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=rest,notification-sender=rest"
	vars["GAMELAN_EXECUTOR_REST_HOST"] = "127.0.0.1"
	vars["GAMELAN_EXECUTOR_REST_PORT"] = "0"
	vars["GAMELAN_EXECUTOR_REST_RESULT_SINK"] = "grpc"
	return vars
}

// restPost posts a task to the REST intake at endpoint for executorID.
func restPost(t *testing.T, endpoint, executorID, run, node, body string, header http.Header) resttest.Answer {
	t.Helper()
	answer, err := resttest.PostTask(deadline(t, conditionTimeout), nil, endpoint, resttest.TaskPost{
		ExecutorID: executorID, RunID: run, NodeID: node, Attempt: 1,
		IdempotencyKey: run + ":" + node + ":1", Header: header, Body: []byte(body),
	})
	require.NoError(t, err)
	return answer
}

// Failure 1 (REST): a calculate-tax task posted for notification-sender is
// answered NO_EXECUTOR naming both; posted for its own executor it runs.
func TestRESTContradictingTaskIsAnsweredNoExecutor(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	r := startService(t, restEnv(addr))
	const notificationRESTID, taxRESTID = "executor-notification-sender-test", "executor-calculate-tax-test"
	endpoint := waitForServing(t, engine, r, notificationRESTID).GetEndpoint()
	const run = "run-rest-contradiction"
	answer := restPost(t, endpoint, notificationRESTID, run, "tax-node", `{"nodeType": "calculate-tax", "context": {"amount": 100}}`, nil)
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	answer = restPost(t, endpoint, taxRESTID, run, "tax-own", `{"nodeType": "calculate-tax", "context": {"amount": 100}}`, nil)
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	waitForUniqueResults(t, engine, 2, conditionTimeout)
	requireNoExecutorNamingBoth(t, engine.UniqueResults()[resultKey(run, "tax-node")], "calculate-tax", notificationRESTID)
	own := engine.UniqueResults()[resultKey(run, "tax-own")]
	require.NotNil(t, own)
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, own.GetStatus(), "%v", own.GetError())
	assert.False(t, ranHandler(r.logs, run, "notification-sender"))
}

// Failure 6: a token signed with the shared secret for another service
// (another audience) was accepted on push. It is refused on push (see
// TestGRPCInboundJWT) and on the REST intake alike.
func TestInboundTokenForAnotherAudienceIsRefused(t *testing.T) {
	t.Parallel()
	secret := string(securitytest.Secret(t))
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := restEnv(addr)
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=rest"
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
	r := startService(t, vars)
	const taxRESTID = "executor-calculate-tax-test"
	endpoint := waitForServing(t, engine, r, taxRESTID).GetEndpoint()
	bearer := func(cfg security.MinterConfig) http.Header {
		return http.Header{"Authorization": {"Bearer " + engineToken(t, cfg)}}
	}
	otherAudience := engineMinterConfig(secret)
	otherAudience.Audience = "some-other-service"
	answer := restPost(t, endpoint, taxRESTID, "run-aud", "other", `{"amount": 1}`, bearer(otherAudience))
	assert.Equal(t, http.StatusUnauthorized, answer.Status, answer.Body)
	assert.Contains(t, answer.Body, "audience")

	answer = restPost(t, endpoint, taxRESTID, "run-aud", "ours", `{"amount": 1}`, bearer(engineMinterConfig(secret)))
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	assert.Len(t, engine.Results(), 1, "the task with another audience's token ran")
}

// Failure 5: three unauthenticated pushes with 1.9 MB run and node ids
// wrote 11 MB to the log, and a handler's error quoting a 2 MiB input
// wrote 10.5 MB (and sent it to the engine). Every value from outside is
// now clipped in the log, repeated refusals are throttled, and the error
// kept in a result is bounded.
func TestHostileInputCannotFillTheDisk(t *testing.T) {
	t.Parallel()
	secret := string(securitytest.Secret(t))
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	before := len(r.logs.text())

	huge := strings.Repeat("x", 1900<<10)
	for i := range 3 {
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, &dispatcherpb.ExecutionRequest{
			RunId: huge + fmt.Sprint(i), NodeId: huge, Attempt: 1,
		})
		require.NoError(t, err)
		assert.EqualValues(t, 401, ack.GetCode(), "%.100s", ack.GetMessage())
	}
	for i := range 200 { // a flood of refusals: a few lines, and a count
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-flood", fmt.Sprintf("n%d", i), "1"))
		require.NoError(t, err)
		require.EqualValues(t, 401, ack.GetCode())
	}
	refusalLogs := len(r.logs.text()) - before
	assert.Less(t, refusalLogs, 32<<10, "203 refusals wrote %d bytes of logs", refusalLogs)
	assert.LessOrEqual(t, strings.Count(r.logs.text(), "authentication failed"), 12, "refusal lines are throttled")

	// A handler's error quoting a 2 MiB input.
	before = len(r.logs.text())
	ctx := withBearer(deadline(t, conditionTimeout), engineToken(t, engineMinterConfig(secret)))
	ack, err := engine.Push(ctx, endpoint, taxPush("run-quote", "n1", strings.Repeat("9", 2<<20)+"x"))
	require.NoError(t, err)
	require.True(t, ack.GetAccepted(), "%.200v", ack)
	waitForUniqueResults(t, engine, 1, conditionTimeout)
	res := engine.UniqueResults()[resultKey("run-quote", "n1")]
	require.NotNil(t, res)
	assert.Equal(t, domain.CodeInvalidInput, res.GetError().GetCode())
	assert.LessOrEqual(t, len(res.GetError().GetMessage()), domain.MaxErrorMessageBytes+64, "the error kept in the result is bounded")
	r.logs.waitFor(t, "task finished")
	assert.Less(t, len(r.logs.text())-before, 16<<10, "the task's log lines quote its input clipped")
}
