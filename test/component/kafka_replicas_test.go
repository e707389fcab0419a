package component

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// TestKafkaReplicaStopKeepsSharedExecutorRegistered runs two replicas of
// one service (same NAME: one consumer group, one logical Kafka executor
// id, docs/protocol.md, section 4) and stops one gracefully. The other still
// serves the shared executor id, so the stopping replica must not withdraw
// it: an unregistration of the shared id makes an engine forget an executor
// that is still consuming (the reference engine also reassigns the tasks it
// holds), and nothing brings it back before the next periodic
// re-registration, since a Kafka heartbeat cannot learn that the engine
// forgot it.
func TestKafkaReplicaStopKeepsSharedExecutorRegistered(t *testing.T) {
	broker := kafkatest.Start(t)
	unregistrations := broker.Unregistrations(t)
	vars := kafkaEnv(broker)
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
	first := startService(t, vars)
	second := startService(t, vars)
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 2))

	require.NoError(t, first.stop(t))
	// The stopped replica's unregistrations, if any, were acknowledged
	// before its Run returned: read the topic up to its end.
	require.NoError(t, unregistrations.CatchUp(deadline(t, conditionTimeout)))
	for _, m := range unregistrations.Messages() {
		assert.NotEqual(t, kafkaTaxExecutorID, m.ExecutorID,
			"a replica that stopped withdrew the executor id its running replica still serves")
	}
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 1), "the second replica holds the group; logs:\n%s", second.logs.text())
}
