package component

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
)

// TestRESTIntakeThroughTheService serves calculate-tax over REST
// (TRANSPORT_OVERRIDES=calculate-tax=rest), registered over HTTP and
// answering on the results topic (REST_RESULT_SINK=kafka). A task posted as
// Gamelan's REST dispatcher posts it, identity in headers and the variables
// as the JSON body, is accepted with 202 and answered. Malformed JSON, an
// oversized body and a missing run id are refused with 400 and never run: a
// sentinel posted afterwards is answered, and no other result ever appears.
func TestRESTIntakeThroughTheService(t *testing.T) {
	t.Parallel()
	registry := resttest.Start(t)
	broker := kafkatest.Start(t)
	vars := httpRegistrarEnv(registry)
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=rest"
	vars["GAMELAN_EXECUTOR_INSTANCE_ID"] = "rest-0"
	vars["GAMELAN_EXECUTOR_REST_HOST"] = "127.0.0.1"
	vars["GAMELAN_EXECUTOR_REST_PORT"] = "0"
	vars["GAMELAN_EXECUTOR_REST_MAX_BODY_BYTES"] = "1024"
	vars["GAMELAN_EXECUTOR_REST_RESULT_SINK"] = "kafka"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	const executorID = "executor-calculate-tax-rest-0" // NAME-type-INSTANCE_ID: each REST replica has its endpoint
	r := startService(t, vars)

	waitForRegistry(t, r, registry, "the registration", func() bool { return registry.RegisterCalls(executorID) > 0 })
	info, _ := registry.Executor(executorID)
	assert.Equal(t, "REST", info.CommunicationType)
	require.Regexp(t, `^http://127\.0\.0\.1:[0-9]+/api/v1/tasks$`, info.Endpoint)
	waitForReadiness(t, r, registry, http.StatusOK)
	results := broker.Results(t)

	postTask := func(node string, body string, header http.Header) resttest.Answer {
		t.Helper()
		p := resttest.TaskPost{
			ExecutorID: executorID, RunID: "run-rest", NodeID: node, Attempt: 1,
			IdempotencyKey: "run-rest:" + node + ":1", Signature: "sig-" + node, Header: header,
		}
		if body != "" {
			p.Body = []byte(body)
		}
		answer, err := resttest.PostTask(deadline(t, conditionTimeout), nil, info.Endpoint, p)
		require.NoError(t, err)
		return answer
	}
	resultOf := func(node string) (kafka.ResultMessage, bool) {
		res, ok := results.UniqueResults()[kafkatest.ResultKey(kafka.ResultMessage{RunID: "run-rest", NodeID: node, Attempt: 1})]
		return res, ok
	}

	answer := postTask("tax-1", `{"amount": 12.5}`, nil)
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())
	res, ok := resultOf("tax-1")
	require.True(t, ok, "%+v", results.All())
	assert.Equal(t, "COMPLETED", res.Status, "%+v", res.Error)
	assert.Equal(t, 12.5, res.Output["amount"])
	assert.Equal(t, 1.25, res.Output["tax"])
	assert.Equal(t, executorID, res.ExecutorID)

	refused := map[string]resttest.Answer{
		"bad-json":  postTask("bad-json", `{"amount": `, nil),
		"oversized": postTask("oversized", `{"amount": 1, "pad": "`+strings.Repeat("x", 4096)+`"}`, nil),
		"no-run-id": postTask("no-run-id", `{"amount": 1}`, http.Header{"X-Run-Id": nil}),
	}
	for node, answer := range refused {
		assert.Equal(t, http.StatusBadRequest, answer.Status, "%s: %s", node, answer.Body)
	}

	answer = postTask("sentinel", `{"amount": 40}`, nil)
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 2), "logs:\n%s", r.logs.text())
	res, ok = resultOf("sentinel")
	require.True(t, ok, "the second result is not the sentinel's: %+v", results.All())
	assert.Equal(t, 4.0, res.Output["tax"])
	for node := range refused {
		_, ran := resultOf(node)
		assert.False(t, ran, "refused task %s was answered", node)
	}
	assert.Len(t, results.All(), 2, "results: %+v", results.All())

	code, _ := readinessReason(t, r.baseURL)
	assert.Equal(t, http.StatusOK, code, "refusals leave the service ready")
	require.NoError(t, r.stop(t))
}
