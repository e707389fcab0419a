package component

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// paymentExecutorID is the id of payment-processor served over gRPC with
// INSTANCE_ID "test".
const paymentExecutorID = "executor-payment-processor-test"

// TestGRPCShutdownDeliversResultsBeforeUnregistering cancels the service's
// Run context (what SIGTERM does in main) while 50 slow payment-processor
// tasks (300 ms each, 10 at a time) taken from a StreamTasks stream are in
// flight. Every task the executor accepted runs to completion, and its
// result is acknowledged by the engine before the executor unregisters:
// when UnregisterExecutor arrives, the engine already holds every result.
func TestGRPCShutdownDeliversResultsBeforeUnregistering(t *testing.T) {
	tap := newEngineTap()
	var atUnregister struct {
		sync.Mutex
		calls   int
		results map[string]*gamelanv1.TaskResult
	}
	engine := grpctest.NewEngine(tap.options()...)
	tap.onUnregister = func(executorID string) {
		if executorID != paymentExecutorID {
			return
		}
		results := engine.UniqueResults()
		atUnregister.Lock()
		defer atUnregister.Unlock()
		atUnregister.calls++
		if atUnregister.results == nil {
			atUnregister.results = results
		}
	}
	addr := engine.Start(t)
	vars := serviceEnv(addr, "stream")
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug" // "task finished" lines record what ran
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=grpc"
	vars["PAYMENT_GATEWAY_DELAY"] = "300ms"
	r := startService(t, vars)
	reg := waitForRegistration(t, engine, paymentExecutorID)
	require.EqualValues(t, 10, reg.GetMaxConcurrentTasks())

	const run, tasks = "run-shutdown", 50
	for i := range tasks {
		engine.Enqueue(paymentExecutorID, &gamelanv1.ExecutionTask{
			TaskId: fmt.Sprintf("pay-%02d", i), RunId: run, NodeId: fmt.Sprintf("pay-%02d", i), NodeType: "payment-processor",
			Attempt: 1, ExecutionToken: fmt.Sprintf("token-pay-%02d", i),
			Context: mustStruct(t, map[string]any{"totalAmount": float64(i + 1), "customerId": fmt.Sprintf("C-%02d", i)}),
		})
	}
	// Every task has been sent and admitted (queued or running in the
	// executor), give or take the ones that already finished.
	require.Eventually(t, func() bool {
		admitted, ok := metricValue(t, r.baseURL, "gamelan_executor_tasks_admitted")
		return ok && engine.Queued(paymentExecutorID) == 0 && int(admitted)+len(finishedNodes(r.logs, run)) >= tasks
	}, conditionTimeout, conditionTick, "the executor never took the %d tasks", tasks)
	deliveredAtCancel := len(engine.UniqueResults())

	r.cancel()
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusServiceUnavailable)
	require.NoError(t, r.stop(t))

	ran := finishedNodes(r.logs, run)
	t.Logf("at cancel: %d results delivered, %d tasks in flight; %d sent, %d ran in all",
		deliveredAtCancel, len(ran)-deliveredAtCancel, len(tap.sentNodes()), len(ran))
	assert.GreaterOrEqual(t, len(ran)-deliveredAtCancel, 40, "fewer tasks in flight at cancel than intended")
	assert.Equal(t, []string{paymentExecutorID}, engine.Unregistered(), "unregistered once")

	atUnregister.Lock()
	defer atUnregister.Unlock()
	require.Equal(t, 1, atUnregister.calls)
	for node := range ran {
		res := atUnregister.results[resultKey(run, node)]
		if !assert.NotNil(t, res, "%s ran, and its result was not delivered before the executor unregistered", node) {
			continue
		}
		assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%s: %v", node, res.GetError())
		assert.True(t, strings.HasPrefix(res.GetOutput().AsMap()["transactionId"].(string), "TXN-"), "%s: %v", node, res.GetOutput())
		assert.Equal(t, "token-"+node, res.GetExecutionToken())
	}
	assert.Len(t, atUnregister.results, len(ran), "results for tasks that never ran")
	assert.Len(t, engine.UniqueResults(), len(ran), "results arrived after the executor unregistered")
}

// metricValue reads an unlabelled sample from the service's /q/metrics.
func metricValue(t *testing.T, baseURL, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(baseURL + "/q/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		if value, ok := strings.CutPrefix(scanner.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			return v, err == nil
		}
	}
	return 0, false
}
