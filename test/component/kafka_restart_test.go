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

// restartTasks is how many tasks are produced on each side of the broker
// restart.
const restartTasks = 3000

// TestKafkaBrokerRestartUnderLoad restarts the broker (kfake closed and
// started again on the same port and data directory, as a crash and restart
// would look to clients) while the real service is consuming a load of
// calculate-tax tasks and the engine side is still producing: every task
// the broker acknowledged, before, during or after the restart, is
// eventually answered (unique results == tasks produced, zero lost), and
// the group commits everything (lag 0). Duplicates, the price of
// at-least-once across a restart, are counted and reported.
func TestKafkaBrokerRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	broker := kafkatest.Start(t, kafkatest.WithPersistence())
	r := startKafkaService(t, broker, kafkaEnv(broker))
	tally := broker.Results(t)
	producer := broker.BulkProducer(t)
	ctx := deadline(t, 2*time.Minute)

	tasks := make(map[string]kafka.TaskMessage, 2*restartTasks)
	produce := func(runID string, from, to int) {
		for i := from; i < to; i++ {
			msg := kafkaTaxTask(fmt.Sprintf("%s-%02d", runID, i%16), i)
			tasks[kafkatest.TaskKey(msg)] = msg
			producer.Produce(ctx, msg)
		}
	}
	// The first half is in the service's hands, partly answered, when the
	// broker goes down; the start of the second half is still on its way
	// to the broker.
	produce("run-before", 0, restartTasks)
	require.NoError(t, tally.WaitForUnique(ctx, restartTasks/4))
	produce("run-during", 0, restartTasks/2)
	answeredBefore := tally.Unique()
	restartBegan := time.Now()
	broker.Restart(t)
	restarted := time.Since(restartBegan)
	produce("run-after", restartTasks/2, restartTasks)
	require.NoError(t, producer.Flush(ctx))
	require.Equal(t, len(tasks), producer.Acknowledged(), "tasks acknowledged by the broker")

	require.NoError(t, tally.WaitForUnique(ctx, len(tasks)), "logs:\n%s", r.logs.text())
	recovered := time.Since(restartBegan)
	waitForLagZero(t, broker, 30*time.Second)
	require.NoError(t, tally.CatchUp(deadline(t, conditionTimeout)))

	require.Empty(t, tally.Malformed())
	unique := tally.UniqueResults()
	require.Len(t, unique, len(tasks), "unique results == tasks produced")
	failures := 0
	for key, msg := range tasks {
		res, ok := unique[key]
		if !assert.True(t, ok, "no result for %s", key) || !checkKafkaTaxResult(t, res, msg) {
			failures++
		}
		if failures >= 5 {
			t.Fatal("too many missing or wrong results")
		}
	}
	t.Logf("%d tasks produced, %d answered before the restart (which took %s), all %d answered %s after it began; %d duplicate results",
		len(tasks), answeredBefore, restarted.Round(time.Millisecond), tally.Unique(), recovered.Round(time.Millisecond), tally.Duplicates())
	require.NoError(t, r.stop(t))
}
