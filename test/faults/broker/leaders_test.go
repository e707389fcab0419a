package broker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/test/testkit"
)

// TestPartitionLeadersMoveUnderLoad runs the service against a cluster of
// three brokers while the load is produced in rounds, and between rounds
// moves things under it: every partition's leader is re-elected at random
// (ShufflePartitionLeaders), the group's coordinator moves
// (RehashCoordinators), one broker is removed from the cluster and added
// back on the same port (RemoveNode, AddNode: leaders and the coordinator
// move off it and back), and errors are injected into the executor's own
// requests (kfake faults): NOT_LEADER_OR_FOLLOWER on its result produces and
// its task fetches, NOT_COORDINATOR on its offset commits.
//
// It proves: every task gets a result (zero lost); every injected fault was
// met; no offset is committed before its task's result is written
// (commitAudit); at the end the group's committed offset of every partition
// equals the end of the tasks topic. It reports the duplicates, the number
// of leader moves, and as Recovery the time from the last fault (the broker
// back, the faults met) to the first result written after it.
func TestPartitionLeadersMoveUnderLoad(t *testing.T) {
	t.Parallel()
	rounds := testkit.Pick(5, 20)
	perRound := testkit.Pick(150, 600)
	o := &testkit.Outcome{Scenario: "kafka partition leaders move under load", Notes: map[string]any{}}
	b := kafkatest.Start(t, kafkatest.WithBrokers(3), kafkatest.WithPartitions(6))
	cluster := b.Cluster()
	audit := newCommitAudit(t, b)
	audit.install(cluster)
	results := b.Results(t)
	ctx := within(t, testkit.Pick(3*time.Minute, 10*time.Minute))

	m := startTaxMember(t, b, "l1")
	require.NoError(t, b.WaitGroupStable(ctx, group, 1), "logs:\n%s", m.logs.text())
	load := newTaxLoad(t, b, o)

	// Brokers leave for good and new ones join, one at a time: kfake's
	// RemoveNode closes a broker's listener but not the connections it
	// holds, so a node added back under the same id and port would answer
	// on those old connections as a stranger; a new id on a new port is a
	// broker replaced, as a cluster does it.
	nodes := []int32{0, 1, 2}
	moves, replaced := 0, 0
	for round := range rounds {
		load.produce(ctx, "run-leaders", perRound)
		// Let part of the round be answered, so that moves land while
		// tasks are both queued in the topic and in the service's hands.
		require.NoError(t, results.WaitForUnique(ctx, load.produced-perRound/2), "round %d; %s; logs:\n%s", round, diagnose(b), m.logs.text())
		cluster.ShufflePartitionLeaders()
		moves++
		switch round % 3 {
		case 1:
			cluster.RehashCoordinators()
		case 2:
			gone := nodes[0]
			require.NoError(t, cluster.RemoveNode(gone)) // its partitions' leaders move to the others
			moves++
			load.produce(ctx, "run-leaders", perRound/3)
			require.NoError(t, results.WaitForUnique(ctx, load.produced-perRound/2), "round %d, node %d removed; %s; logs:\n%s", round, gone, diagnose(b), m.logs.text())
			added, _, err := cluster.AddNode(-1, 0) // leaders are shuffled over all three again
			require.NoError(t, err)
			nodes = append(nodes[1:], added)
			moves++
			replaced++
		}
	}

	// Faults on the executor's own requests, each met at least once: its
	// result produces, its task fetches, its commits.
	faults := map[string]*kfake.FaultHandle{
		"produce results": cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: kafkatest.ResultsTopic,
			Err: kerr.NotLeaderForPartition, Count: 3}),
		"fetch tasks": cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: kafkatest.TasksTopic,
			Err: kerr.NotLeaderForPartition, Count: 3, When: fromSarama}),
		"commit offsets": cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: group,
			Err: kerr.NotCoordinator, Count: 3}),
	}
	load.produce(ctx, "run-faults", perRound)
	hits := map[string]int{}
	for name, h := range faults {
		waitCtx, cancel := context.WithTimeout(ctx, waitLimit)
		err := h.Wait(waitCtx, 1)
		cancel()
		require.NoError(t, err, "fault %q never met", name)
		hits[name] = h.Hits()
	}
	last := markResults(t, b)
	load.produce(ctx, "run-after", perRound)
	first, err := last.firstAfter(ctx, results)
	require.NoError(t, err, "no result after the last fault; logs:\n%s", m.logs.text())
	o.Recovery = first

	load.flush(t, ctx)
	require.NoError(t, results.WaitForUnique(ctx, len(load.tasks)), "logs:\n%s", m.logs.text())
	requireAllCommitted(t, ctx, b)
	duplicated := countAnswers(t, ctx, results, o, load.tasks)
	figures := audit.require(t)
	o.Notes["leaderMoves"] = moves
	o.Notes["brokersReplaced"] = replaced
	o.Notes["faultHits"] = hits
	o.Notes["duplicatedTasks"] = len(duplicated)
	o.Notes["commitsAudited"], o.Notes["commitsUnverified"] = figures.Commits, figures.Unverified
	o.Check(t)
	require.NoError(t, m.stop())
}

// saramaFetchVersion is the newest Fetch version sarama speaks at the
// protocol version the executor sets (Kafka 2.8).
const saramaFetchVersion = 12

// fromSarama tells the executor's fetches (sarama, at Kafka 2.8's Fetch
// version at most) from the test's readers' (franz-go, which speaks the
// newest version kfake offers), so that a fault meant for the executor is
// not spent on the test's own reader of the tasks topic.
func fromSarama(req kmsg.Request) bool { return req.GetVersion() <= saramaFetchVersion }
