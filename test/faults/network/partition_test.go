package network

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// TestPartition cuts the executor off from the engine, both ways, for 10
// s in the middle of a steady load, then heals the network, for each gRPC
// intake (push, the Gamelan engine's path; StreamTasks; ExecuteStream).
// The partition is a blackhole, not a reset: every connection stays open,
// and what was sent during it is delivered when it heals, as TCP would
// after a partition shorter than its retransmission timeout.
//
// It proves that no task is lost and every one is answered correctly,
// whatever was in flight when the partition began (pushes, tasks on a
// stream, results being reported) and whatever the engine submitted during
// it; and that the partition held (no task submitted during it was
// answered before it healed). It reports the duplicates (results resent
// because their acknowledgement was held, pushes retried by the engine
// after its 10 s push timeout), the time from the heal to the first result
// of a task not answered before it (Recovery), and to every task answered.
//
// The three intakes run side by side, each its own engine, proxies and
// service, under one partition: the partition is mostly waiting, and side
// by side the scenario takes the time of one.
func TestPartition(t *testing.T) {
	t.Parallel()
	const partition = 10 * time.Second // the figure, in both variants
	// The long variant runs longer and heavier, yet below what three
	// services side by side answer (tens of tasks a second each, with the
	// race detector), so that the time to answer everything after the heal
	// measures the partition's backlog, not an overload.
	perSecond := testkit.Pick(20, 30)
	afterHeal := testkit.Pick(2*time.Second, 20*time.Second)
	intakes := []string{"push", "stream", "bidi"}

	stacks := make(map[string]*stack)
	outcomes := make(map[string]*testkit.Outcome)
	for _, intake := range intakes {
		outcomes[intake] = &testkit.Outcome{Scenario: "network partition 10s, " + intake}
		stacks[intake] = startStack(t, intake, outcomes[intake], nil)
	}
	stop := make(chan struct{})
	var loads []<-chan struct{}
	for _, intake := range intakes {
		loads = append(loads, stacks[intake].load(t, perSecond, stop))
	}
	// In the middle of the load: tasks are flowing both ways everywhere.
	for _, intake := range intakes {
		require.NoError(t, stacks[intake].results.waitCount(perSecond, waitLong), intake)
	}

	before := make(map[string]int)
	for _, intake := range intakes {
		stacks[intake].partition()
		before[intake] = len(stacks[intake].submitted())
	}
	partitioned := time.Now()
	<-time.After(partition)
	answeredAtHeal := make(map[string]map[string]time.Time)
	healed := make(map[string]time.Time)
	for _, intake := range intakes {
		answeredAtHeal[intake] = stacks[intake].results.answeredAt()
		stacks[intake].heal()
		healed[intake] = time.Now()
	}
	<-time.After(afterHeal)
	close(stop)
	for _, done := range loads {
		<-done
	}

	for _, intake := range intakes {
		t.Run(intake, func(t *testing.T) {
			s, o, healed, answeredAtHeal := stacks[intake], outcomes[intake], healed[intake], answeredAtHeal[intake]
			s.waitAllAnswered(t)
			s.checkResults(t)

			tasks := s.submitted()
			during := 0
			var leaked []string
			for _, sub := range tasks[before[intake]:] {
				if sub.at.Before(healed) {
					during++
					if _, ok := answeredAtHeal[sub.key]; ok {
						leaked = append(leaked, sub.key)
					}
				}
			}
			require.Positive(t, during, "no task was submitted during the partition")
			assert.Empty(t, leaked, "tasks submitted during the partition were answered before it healed")
			waiting := 0
			for _, sub := range tasks {
				if _, ok := answeredAtHeal[sub.key]; !ok && sub.at.Before(healed) {
					waiting++
				}
			}

			// Recovery: the first result, after the heal, of a task that had
			// none before it; and the last task's first result.
			var first, last time.Time
			for key, at := range s.results.answeredAt() {
				if _, before := answeredAtHeal[key]; before {
					continue
				}
				if first.IsZero() || at.Before(first) {
					first = at
				}
				if at.After(last) {
					last = at
				}
			}
			o.Recovery = first.Sub(healed)
			lat := s.latencies()
			o.Notes = map[string]any{
				"intake":                   intake,
				"partitionMs":              healed.Sub(partitioned).Milliseconds(),
				"submittedPerSecond":       perSecond,
				"submittedBeforePartition": before[intake],
				"submittedDuringPartition": during,
				"unansweredAtHeal":         waiting,
				"healToAllAnsweredMs":      last.Sub(healed).Milliseconds(),
				"engineDuplicates":         s.engine.Counters().Duplicates,
				"redeliveries":             s.redeliveries(),
				"latencyP50Ms":             percentile(lat, 0.5),
				"latencyMaxMs":             percentile(lat, 1),
				"engineProxy":              proxyNotes(s.engineProxy),
				"pushProxy":                proxyNotes(s.pushProxy),
			}
			o.Check(t)
		})
	}
}
