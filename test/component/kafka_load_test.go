package component

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// kafkaLoadTasks is the number of tasks of each executor type the Kafka
// load must carry (issue 4, "Done when").
const kafkaLoadTasks = 10_000

// kafkaForeignTasks are tasks addressed to another executor, mixed into the
// load: skipped without an answer, and committed.
const kafkaForeignTasks = 100

// TestKafkaLoadPaymentsAndTaxes is issue 4's "Done when" load: the real
// service (service.Run, TRANSPORT=kafka, payment-processor declared KAFKA,
// calculate-tax routed to Kafka by TRANSPORT_OVERRIDES) consumes 10,000
// payment-processor and 10,000 calculate-tax tasks in Gamelan's shape from a
// kfake broker on 127.0.0.1, and the results topic ends up with exactly
// 20,000 unique results, each COMPLETED and correct for its own task (no
// result lost, none for the tasks addressed to someone else), while the
// group's lag reaches 0: every offset, skipped ones included, is
// committed. Duplicates are reported, not failed (the engine deduplicates).
// With REGISTRAR=kafka both executor ids are registered as KAFKA executors
// on the registrations topic and unregistered at stop.
func TestKafkaLoadPaymentsAndTaxes(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	broker := kafkatest.Start(t)
	registrations, unregistrations := broker.Registrations(t), broker.Unregistrations(t)
	r := startKafkaService(t, broker, kafkaEnv(broker))
	tally := broker.Results(t)
	producer := broker.BulkProducer(t)
	ctx := deadline(t, 3*time.Minute)

	tasks := make(map[string]kafka.TaskMessage, 2*kafkaLoadTasks)
	began := time.Now()
	for i := range kafkaLoadTasks {
		pay := kafkaPaymentTask(fmt.Sprintf("run-pay-%02d", i%40), i)
		tax := kafkaTaxTask(fmt.Sprintf("run-tax-%02d", i%40), i)
		tasks[kafkatest.TaskKey(pay)], tasks[kafkatest.TaskKey(tax)] = pay, tax
		producer.Produce(ctx, pay)
		producer.Produce(ctx, tax)
		if i%(kafkaLoadTasks/kafkaForeignTasks) == 0 {
			foreign := kafkaTaxTask("run-foreign", i)
			foreign.TargetExecutor = "elsewhere-calculate-tax"
			producer.Produce(ctx, foreign)
		}
	}
	require.NoError(t, producer.Flush(ctx))
	produced := time.Since(began)
	require.Equal(t, len(tasks)+kafkaForeignTasks, producer.Acknowledged(), "tasks acknowledged by the broker")

	require.NoError(t, tally.WaitForUnique(ctx, len(tasks)))
	answered := time.Since(began)
	waitForLagZero(t, broker, 30*time.Second)
	require.NoError(t, tally.CatchUp(deadline(t, conditionTimeout)))

	require.Empty(t, tally.Malformed(), "records on the results topic that are not results")
	unique := tally.UniqueResults()
	require.Len(t, unique, len(tasks), "unique results: one per task, none for another executor's")
	failures := 0
	for key, msg := range tasks {
		res, ok := unique[key]
		if !assert.True(t, ok, "no result for %s", key) {
			failures++
		} else if msg.Context["amount"] != nil {
			if !checkKafkaTaxResult(t, res, msg) {
				failures++
			}
		} else if !checkKafkaPaymentResult(t, res, msg) {
			failures++
		}
		if failures >= 5 {
			t.Fatal("too many missing or wrong results")
		}
	}
	t.Logf("%d tasks (%d payment-processor, %d calculate-tax, %d for another executor) produced in %s, answered in %s (%.0f tasks/s); %d duplicate results",
		len(tasks)+kafkaForeignTasks, kafkaLoadTasks, kafkaLoadTasks, kafkaForeignTasks,
		produced.Round(time.Millisecond), answered.Round(time.Millisecond), float64(len(tasks))/answered.Seconds(), tally.Duplicates())
	require.NoError(t, r.stop(t))

	// REGISTRAR=kafka: each type registered on its topic as a KAFKA
	// executor reached through the tasks topic, and unregistered at stop.
	registered := map[string]kafka.RegistrationMessage{}
	require.NoError(t, registrations.WaitForMessagesFunc(deadline(t, conditionTimeout), func(msgs []kafka.RegistrationMessage) bool {
		for _, reg := range msgs {
			registered[reg.ExecutorID] = reg
		}
		return len(registered) >= 2
	}), "registrations: %v", registered)
	for id, typ := range map[string]string{kafkaPaymentExecutorID: "payment-processor", kafkaTaxExecutorID: "calculate-tax"} {
		reg, ok := registered[id]
		if assert.True(t, ok, "registration of %s; got %v", id, registered) {
			assert.Equal(t, typ, reg.ExecutorType)
			assert.Equal(t, "KAFKA", reg.CommunicationType)
			assert.Equal(t, kafkatest.TasksTopic, reg.Endpoint)
		}
	}
	// Kafka executor ids are shared by every replica of the service, so a
	// replica that stops never unregisters them: the engine ages them out
	// once the last replica stops heartbeating.
	// A sentinel written after the stop bounds the wait: once the reader
	// has it, any unregistration the service sent has been read too.
	sentinel := kafka.UnregistrationMessage{ExecutorID: "sentinel"}
	require.NoError(t, broker.ProduceJSON(deadline(t, conditionTimeout), kafkatest.UnregistrationsTopic, "sentinel", sentinel, nil))
	require.NoError(t, unregistrations.WaitForMessagesFunc(deadline(t, conditionTimeout), func(msgs []kafka.UnregistrationMessage) bool {
		return len(msgs) > 0 && msgs[len(msgs)-1].ExecutorID == "sentinel"
	}))
	assert.Len(t, unregistrations.Messages(), 1, "a replica unregistered a shared Kafka executor id")
}
