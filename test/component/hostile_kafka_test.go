package component

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
)

// The regression tests of issue 10 over Kafka, on a kfake broker and the
// real service: what a hostile engine or an unlucky operator puts on the
// tasks topic.

// kafkaNotificationExecutorID is notification-sender's Kafka executor id.
const kafkaNotificationExecutorID = "executor-notification-sender"

// kafkaTwoTypesEnv serves calculate-tax and notification-sender over Kafka.
func kafkaTwoTypesEnv(broker *kafkatest.Broker) map[string]string {
	vars := kafkaEnv(broker)
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax,notification-sender"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka,notification-sender=kafka"
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	return vars
}

// produceRaw writes value to the tasks topic, keyed by key.
func produceRaw(t *testing.T, broker *kafkatest.Broker, key, value string) {
	t.Helper()
	require.NoError(t, broker.ProduceRaw(deadline(t, conditionTimeout), kafkatest.TasksTopic, []byte(key), []byte(value)))
}

// Failure 1 (Kafka): a calculate-tax task addressed to notification-sender's
// executor id is answered NO_EXECUTOR naming both, and runs no handler.
func TestKafkaContradictingTaskIsAnsweredNoExecutor(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Start(t)
	r := startKafkaService(t, broker, kafkaTwoTypesEnv(broker))
	results := broker.Results(t)
	contradiction := kafkaTaxTask("run-contradiction", 1)
	contradiction.TargetExecutor = kafkaNotificationExecutorID
	contradiction.NodeType = "calculate-tax"
	require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), contradiction))
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())
	res := results.UniqueResults()[kafkatest.ResultKey(kafka.ResultMessage{RunID: contradiction.RunID, NodeID: contradiction.NodeID, Attempt: 1})]
	assert.Equal(t, "FAILED", res.Status)
	require.NotNil(t, res.Error)
	assert.Equal(t, domain.CodeNoExecutor, res.Error.Code)
	assert.Contains(t, res.Error.Message, "calculate-tax")
	assert.Contains(t, res.Error.Message, kafkaNotificationExecutorID)
	assert.False(t, ranHandler(r.logs, contradiction.RunID, "notification-sender"))
	waitForLagZero(t, broker, conditionTimeout)
}

// Failure 2 (Kafka): tasks carrying an idempotency key that is not their
// own identity are answered FAILED INVALID_TASK, each with its own ids,
// never with another run's result.
func TestKafkaTaskWithAnotherRunsKeyIsAnsweredInvalid(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Start(t)
	r := startKafkaService(t, broker, kafkaEnv(broker))
	results := broker.Results(t)
	for run, amount := range map[string]float64{"x": 100, "y": 999} {
		msg := kafka.TaskMessage{RunID: run, NodeID: "tax-node", Attempt: 1, Token: "token-" + run,
			TargetExecutor: kafkaTaxExecutorID, IdempotencyKey: "shared:tax-node:1", Context: map[string]any{"amount": amount}}
		require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), msg))
	}
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 2), "logs:\n%s", r.logs.text())
	for _, run := range []string{"x", "y"} {
		res := results.UniqueResults()[kafkatest.ResultKey(kafka.ResultMessage{RunID: run, NodeID: "tax-node", Attempt: 1})]
		assert.Equal(t, "FAILED", res.Status, "%s: %+v", run, res)
		if assert.NotNil(t, res.Error, run) {
			assert.Equal(t, domain.CodeInvalidTask, res.Error.Code)
			assert.Contains(t, res.Error.Message, "idempotency key")
		}
		assert.Equal(t, "token-"+run, res.ExecutionToken, "answered with its own identity")
		assert.Nil(t, res.Output["tax"], "%s was answered with a computed result", run)
	}
	waitForLagZero(t, broker, conditionTimeout)
}

// Failures 3 and 7 (Kafka): a record with a 600 KB run id produced a result
// the producer refused for ever, and its offset was never committed; an
// attempt of 2147483648 was echoed; an attempt that could not be parsed was
// answered with attempt 0. Now no result can name such records: they are
// skipped (logged) and committed, and the tasks after them are answered.
func TestKafkaRecordsNoResultCanNameAreSkippedAndCommitted(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Start(t, kafkatest.WithPartitions(1))
	r := startKafkaService(t, broker, kafkaEnv(broker))
	results := broker.Results(t)
	huge := strings.Repeat("r", 600<<10)
	produceRaw(t, broker, "huge", `{"runId":"`+huge+`","nodeId":"tax-1","attempt":1,"targetExecutor":"`+kafkaTaxExecutorID+`","context":{"amount":1}}`)
	produceRaw(t, broker, "beyond", `{"runId":"run-beyond","nodeId":"tax-1","attempt":2147483648,"targetExecutor":"`+kafkaTaxExecutorID+`","context":{"amount":1}}`)
	produceRaw(t, broker, "unparsable", `{"runId":"run-unparsable","nodeId":"tax-1","attempt":"first","targetExecutor":"`+kafkaTaxExecutorID+`"}`)
	good := kafkaTaxTask("run-good", 1)
	require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), good))

	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())
	waitForLagZero(t, broker, conditionTimeout)
	checkKafkaTaxResult(t, results.UniqueResults()[kafkatest.TaskKey(good)], good)
	for _, res := range results.All() {
		assert.Equal(t, "run-good", res.RunID, "a record no result can name was answered: %.200v", res)
	}
	assert.Equal(t, 3, strings.Count(r.logs.text(), "task record skipped"), "each skip is logged")
}

// Failure 3 (Kafka, the general case): brokers whose record limit on the
// results topic is lower than ours refuse a large result for good; it used
// to be resent for ever, its offset never committed. Now it is answered
// FAILED OUTPUT_TOO_LARGE, and the offsets move on.
func TestKafkaResultTheBrokerRefusesForGoodIsReplaced(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Start(t)
	setTopicConfig(t, broker, kafkatest.ResultsTopic, "max.message.bytes", "65536")
	r := startKafkaService(t, broker, kafkaTwoTypesEnv(broker))
	results := broker.Results(t)
	send := func(node, recipient string) {
		t.Helper()
		require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), kafka.TaskMessage{
			RunID: "run-sizes", NodeID: node, Attempt: 1, Token: "token-" + node, TargetExecutor: kafkaNotificationExecutorID,
			Context: map[string]any{"recipient": recipient, "message": "hello"},
		}))
	}
	big := strings.Repeat("x", 100<<10)
	for i := range 3 {
		send(fmt.Sprintf("big-%d", i), big)
		send(fmt.Sprintf("small-%d", i), "ops@example.com")
	}
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), 6), "logs:\n%s", r.logs.text())
	waitForLagZero(t, broker, conditionTimeout)
	for key, res := range results.UniqueResults() {
		if strings.HasPrefix(res.NodeID, "big-") {
			assert.Equal(t, "FAILED", res.Status, key)
			if assert.NotNil(t, res.Error, key) {
				assert.Equal(t, domain.CodeOutputTooLarge, res.Error.Code, "%s: %s", key, res.Error.Message)
			}
			continue
		}
		assert.Equal(t, "COMPLETED", res.Status, "%s: %+v", key, res.Error)
	}
}

// setTopicConfig sets one configuration entry of a topic on the broker.
func setTopicConfig(t *testing.T, broker *kafkatest.Broker, topic, name, value string) {
	t.Helper()
	client, err := kgo.NewClient(broker.ClientOptions()...)
	require.NoError(t, err)
	defer client.Close()
	entry := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	entry.Name, entry.Value, entry.Op = name, kmsg.StringPtr(value), kmsg.IncrementalAlterConfigOpSet
	resource := kmsg.NewIncrementalAlterConfigsRequestResource()
	resource.ResourceType, resource.ResourceName = kmsg.ConfigResourceTypeTopic, topic
	resource.Configs = append(resource.Configs, entry)
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.Resources = append(req.Resources, resource)
	resp, err := req.RequestWith(deadline(t, conditionTimeout), client)
	require.NoError(t, err)
	for _, r := range resp.Resources {
		require.Zero(t, r.ErrorCode, "alter %s of %s: %v", name, r.ResourceName, r.ErrorMessage)
	}
}

// Failure 4: workers were shared, and a worker blocked while its
// transport's outbox was full, so a transport whose results could not be
// delivered (here the engine refuses every ReportResults) stopped the tasks
// of every transport. Now it pauses its own intake only (push answers 503),
// and Kafka keeps answering.
func TestOneTransportsDeadSinkDoesNotStallAnother(t *testing.T) {
	t.Parallel()
	tap := newEngineTap()
	tap.holdResults.Store(true)
	engine := grpctest.NewEngine(tap.options()...)
	addr := engine.Start(t)
	broker := kafkatest.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax,payment-processor"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	vars["GAMELAN_EXECUTOR_THREAD_POOL_SIZE"] = "2"
	vars["GAMELAN_EXECUTOR_QUEUE_SIZE"] = "2"
	vars["GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE"] = "4"
	vars["PAYMENT_GATEWAY_DELAY"] = "0s"
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 1))

	// Push until the gRPC transport's results back up and its intake
	// answers 503.
	refused := false
	for i := 0; i < 100 && !refused; i++ {
		ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-stuck", fmt.Sprintf("n%d", i), "10"))
		require.NoError(t, err)
		refused = !ack.GetAccepted() && ack.GetCode() == 503
	}
	require.True(t, refused, "the gRPC intake never paused although its results cannot be delivered")

	// Twenty times the workers, the queue and the outbox, over Kafka.
	results := broker.Results(t)
	const payments = 80
	for i := range payments {
		require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), kafkaPaymentTask("run-kafka", i)))
	}
	require.NoError(t, results.WaitForUnique(deadline(t, conditionTimeout), payments), "logs:\n%s", r.logs.text())
	for key, res := range results.UniqueResults() {
		assert.Equal(t, "COMPLETED", res.Status, "%s: %+v", key, res.Error)
	}

	// The engine comes back: the held results are delivered.
	tap.holdResults.Store(false)
	require.Eventually(t, func() bool { return len(engine.UniqueResults()) > 0 }, conditionTimeout, conditionTick)
}
