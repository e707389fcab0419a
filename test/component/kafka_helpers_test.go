package component

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// The Kafka executor ids of the service started by kafkaEnv: NAME-type,
// one logical id shared by every replica.
const (
	kafkaTaxExecutorID     = "executor-calculate-tax"
	kafkaPaymentExecutorID = "executor-payment-processor"
	// kafkaGroup is the consumer group: GAMELAN_EXECUTOR_NAME by default.
	kafkaGroup = "executor"
)

// kafkaEnv serves payment-processor and calculate-tax over the Kafka
// transport of broker, registering over Kafka too, at info level so that a
// load stays quiet.
func kafkaEnv(broker *kafkatest.Broker) map[string]string {
	vars := baseEnv()
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "info"
	vars["GAMELAN_EXECUTOR_TRANSPORT"] = "kafka"
	vars["GAMELAN_EXECUTOR_REGISTRAR"] = "kafka"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor,calculate-tax"
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka"
	return vars
}

// startKafkaService runs the real service through service.Run with vars and
// waits until it is the one member of its stable consumer group.
func startKafkaService(t *testing.T, broker *kafkatest.Broker, vars map[string]string) *running {
	t.Helper()
	r := startService(t, vars)
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 1), "logs:\n%s", r.logs.text())
	return r
}

// kafkaTaxTask is the i-th calculate-tax task of run runID in Gamelan's
// shape. Even tasks name their type in context.__node_type__, odd ones
// name the executor id in targetExecutor, as the Gamelan engine does.
func kafkaTaxTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("tax-%05d", i)
	msg := kafka.TaskMessage{
		RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context: map[string]any{"amount": taxAmountValue(i)},
	}
	if i%2 == 0 {
		msg.Context["__node_type__"] = "calculate-tax"
	} else {
		msg.TargetExecutor = kafkaTaxExecutorID
	}
	return msg
}

// taxAmountValue is taxAmount as a number.
func taxAmountValue(i int) float64 { return float64(i)*1.25 + 0.37 }

// kafkaPaymentTask is the i-th payment-processor task of run runID in
// Gamelan's shape; targetExecutor names the executor id for even tasks and
// the executor type for odd ones.
func kafkaPaymentTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("pay-%05d", i)
	msg := kafka.TaskMessage{
		RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context:        map[string]any{"totalAmount": paymentAmount(i), "customerId": fmt.Sprintf("cust-%05d", i)},
		TargetExecutor: kafkaPaymentExecutorID,
	}
	if i%2 == 1 {
		msg.TargetExecutor = "payment-processor"
	}
	return msg
}

// paymentAmount is the total amount of the i-th payment: above zero, with
// cents, different for every task.
func paymentAmount(i int) float64 { return 10 + float64(i)*0.01 }

// checkKafkaTaxResult asserts that res completed the calculate-tax task
// msg, echoing its identity.
func checkKafkaTaxResult(t *testing.T, res kafka.ResultMessage, msg kafka.TaskMessage) bool {
	t.Helper()
	amount := msg.Context["amount"].(float64)
	ok := assert.Equal(t, "COMPLETED", res.Status, "%s: error %+v", msg.NodeID, res.Error)
	ok = assert.Nil(t, res.Error, msg.NodeID) && ok
	ok = assert.Equal(t, amount*0.1, res.Output["tax"], "%s: tax of %v", msg.NodeID, amount) && ok
	ok = assert.Equal(t, amount, res.Output["amount"], "%s: amount", msg.NodeID) && ok
	return checkKafkaIdentity(t, res, msg, kafkaTaxExecutorID) && ok
}

// checkKafkaPaymentResult asserts that res completed the payment msg.
func checkKafkaPaymentResult(t *testing.T, res kafka.ResultMessage, msg kafka.TaskMessage) bool {
	t.Helper()
	ok := assert.Equal(t, "COMPLETED", res.Status, "%s: error %+v", msg.NodeID, res.Error)
	ok = assert.Nil(t, res.Error, msg.NodeID) && ok
	ok = assert.Equal(t, "COMPLETED", res.Output["status"], msg.NodeID) && ok
	txn, _ := res.Output["transactionId"].(string)
	ok = assert.Regexp(t, `^TXN-[0-9a-f-]{36}$`, txn, "%s: transactionId", msg.NodeID) && ok
	ok = assert.Equal(t, msg.Context["totalAmount"], res.Output["amount"], "%s: amount", msg.NodeID) && ok
	ok = assert.Equal(t, msg.Context["customerId"], res.Output["customerId"], "%s: customerId", msg.NodeID) && ok
	return checkKafkaIdentity(t, res, msg, kafkaPaymentExecutorID) && ok
}

// checkKafkaIdentity asserts that res echoes msg's run, node, attempt and
// token, names the executor, and has a completion time.
func checkKafkaIdentity(t *testing.T, res kafka.ResultMessage, msg kafka.TaskMessage, executorID string) bool {
	t.Helper()
	ok := assert.Equal(t, msg.RunID, res.RunID, msg.NodeID)
	ok = assert.Equal(t, msg.NodeID, res.NodeID) && ok
	ok = assert.Equal(t, msg.Attempt, res.Attempt, msg.NodeID) && ok
	ok = assert.Equal(t, msg.Token, res.ExecutionToken, msg.NodeID) && ok
	ok = assert.Equal(t, executorID, res.ExecutorID, msg.NodeID) && ok
	ok = assert.False(t, res.CompletedAt.IsZero(), "%s: completedAt", msg.NodeID) && ok
	return ok
}

// waitForLagZero waits until the executor's group has committed every
// record of the tasks topic.
func waitForLagZero(t *testing.T, broker *kafkatest.Broker, d time.Duration) {
	t.Helper()
	require.NoError(t, broker.WaitForLag(deadline(t, d), kafkaGroup, kafkatest.TasksTopic, 0))
}
