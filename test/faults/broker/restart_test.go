package broker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/test/testkit"
)

// TestBrokerRestartUnderLoad restarts the broker while the service consumes
// a load of calculate-tax tasks and the engine side is still producing:
// kfake with a data directory (kafkatest.WithPersistence) closed, as a crash
// looks to its clients, and started again on the same port and directory.
// A third of the tasks is produced and partly answered before, a sixth is
// on its way to the broker as it goes down, and the rest after it is back.
//
// It proves: every task record the broker acknowledged gets a result (zero
// lost, testkit.Outcome); no offset is committed before its task's result is
// on the results topic (commitAudit, before and after the restart); at the
// end the group's committed offset of every partition equals the end of the
// tasks topic. It reports the duplicates (at-least-once across the restart)
// and the recovery: from the broker answering again to the first result
// written after it (Recovery), and to the last task answered
// (notes.allAnsweredMs).
func TestBrokerRestartUnderLoad(t *testing.T) {
	t.Parallel()
	total := testkit.Pick(1200, 12000)
	o := &testkit.Outcome{Scenario: "kafka broker restart under load", Notes: map[string]any{}}
	b := kafkatest.Start(t, kafkatest.WithPersistence())
	audit := newCommitAudit(t, b)
	audit.install(b.Cluster())
	results := b.Results(t)
	ctx := within(t, testkit.Pick(3*time.Minute, 10*time.Minute))

	m := startTaxMember(t, b, "r1")
	require.NoError(t, b.WaitGroupStable(ctx, group, 1), "logs:\n%s", m.logs.text())
	load := newTaxLoad(t, b, o)

	load.produce(ctx, "run-before", total/3)
	require.NoError(t, results.WaitForUnique(ctx, total/12), "logs:\n%s", m.logs.text())
	load.produce(ctx, "run-during", total/6)
	o.Notes["answeredBeforeRestart"] = results.Unique()
	o.Notes["producedBeforeRestart"] = load.produced

	began := time.Now()
	b.Restart(t)
	back := markResults(t, b)
	audit.install(b.Cluster())
	o.Notes["restartMs"] = back.at.Sub(began).Milliseconds()
	load.produce(ctx, "run-after", total-load.produced)

	first, err := back.firstAfter(ctx, results)
	require.NoError(t, err, "no result after the restart; logs:\n%s", m.logs.text())
	o.Recovery = first
	load.flush(t, ctx)
	require.NoError(t, results.WaitForUnique(ctx, len(load.tasks)), "logs:\n%s", m.logs.text())
	o.Notes["allAnsweredMs"] = time.Since(back.at).Milliseconds()

	committed := requireAllCommitted(t, ctx, b)
	o.Notes["committed"] = committed
	duplicated := countAnswers(t, ctx, results, o, load.tasks)
	o.Notes["duplicatedTasks"] = len(duplicated)
	figures := audit.require(t)
	o.Notes["commitsAudited"], o.Notes["commitsUnverified"] = figures.Commits, figures.Unverified
	o.Check(t)
	require.NoError(t, m.stop())
}
