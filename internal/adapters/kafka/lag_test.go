package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// lagTick is how often a test polls the consumer lag.
const lagTick = 5 * time.Millisecond

// TestConsumerLag: K records produced before the group has committed
// anything show as a lag of K on their partition while the runtime holds
// them unsettled, fall to 0 once they are settled, and the partition's
// series goes when the source lets its partitions go. A partition from
// which nothing was read nor committed has no known position and is left
// out.
func TestConsumerLag(t *testing.T) {
	t.Parallel()
	const k = 5
	b := kafkatest.Start(t, kafkatest.WithPartitions(2))
	group := porttest.UniqueID(t)
	source := newSource(t, brokerConfig(b, group), newLogBook(t))
	run := keyOnPartition(t, "lagging", 0, 2)
	for node := range k {
		msg := task(run)
		msg.NodeID = fmt.Sprintf("node-%d", node)
		produceTask(t, b, msg)
	}
	in := startSource(t, source, 2*k)
	waitIntake(t, in, "the records of partition 0 offered", func() bool { return len(in.Outstanding()) == k })

	// The high watermark is the one of the last fetch: poll until it shows.
	var last []telemetry.PartitionLag
	waitLagIs := func(what string, want ...telemetry.PartitionLag) {
		t.Helper()
		require.Eventually(t, func() bool {
			last = source.ConsumerLag()
			return assert.ObjectsAreEqual(want, last)
		}, waitTimeout, lagTick, "%s: lag %+v, want %+v", what, &last, want)
	}
	waitLagIs(fmt.Sprintf("%d records unsettled", k), telemetry.PartitionLag{Topic: kafkatest.TasksTopic, Partition: 0, Lag: k})

	require.Equal(t, k, in.SettleAll(nil))
	waitLagIs("records settled", telemetry.PartitionLag{Topic: kafkatest.TasksTopic, Partition: 0, Lag: 0})
	waitLag(t, b, group, 0) // the broker agrees: the group committed them

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, source.Close(ctx))
	assert.Empty(t, source.ConsumerLag(), "series left for partitions no longer held")
}
