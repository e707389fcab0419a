package component

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// TestGRPCEngineRestartMidStream stops the engine while tasks stream to the
// executor and results are in flight, and brings it back on the same port.
//
// It proves, for the stream and bidi intakes: every task the executor ran
// (its "task finished" log lines; in bidi also every task it acknowledged)
// gets a delivered result, the ones held in flight at the break included,
// which the executor therefore retried; intake resumes on the restarted
// engine (tasks still queued at the break, and tasks queued after it,
// complete without help); and the only tasks without a result are ones the
// engine sent before the break that the executor never ran. The test engine,
// like a real one that has lost a stream, does not reassign those; the test
// re-enqueues them, as the engine's reassignment would, and then all tasks
// complete. Resent results are allowed (the engine deduplicates) and
// reported.
func TestGRPCEngineRestartMidStream(t *testing.T) {
	for _, intake := range []string{"stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			tap := newEngineTap()
			engine := grpctest.NewEngine(tap.options()...)
			addr := engine.Start(t)
			vars := serviceEnv(addr, intake)
			vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug" // "task finished" lines record what ran
			// StreamTasks asks for the free capacity (workers and queue): keep it
			// small so that tasks are still queued at the engine at the break.
			vars["GAMELAN_EXECUTOR_THREAD_POOL_SIZE"] = "4"
			vars["GAMELAN_EXECUTOR_QUEUE_SIZE"] = "16"
			r := startService(t, vars)
			waitForRegistration(t, engine, taxExecutorID)

			const run = "run-restart"
			const beforeBreak, afterBreak = 300, 100
			amounts := make(map[string]string)
			tasks := make(map[string]*gamelanv1.ExecutionTask)
			queue := func(prefix string, n int) []string {
				var nodes []string
				for i := range n {
					node := fmt.Sprintf("%s%03d", prefix, i)
					amounts[node] = taxAmount(len(amounts))
					tasks[node] = taxTask(t, run, node, amounts[node])
					engine.Enqueue(taxExecutorID, tasks[node])
					nodes = append(nodes, node)
				}
				return nodes
			}
			firstBatch := queue("a", beforeBreak)
			waitForUniqueResults(t, engine, 20, conditionTimeout)

			// Hold results so that some are in flight in the executor when
			// the engine goes away.
			// A result that ran but is not recorded may still be on its way
			// in a ReportResults that began before the hold: wait for one the
			// engine refused, which the executor must still hold.
			tap.holdResults.Store(true)
			require.Eventually(t, func() bool {
				return tap.held.Load() > 0 && len(missingResults(engine, run, finishedNodes(r.logs, run))) > 0
			}, conditionTimeout, conditionTick, "no result was ever held in flight")
			engine.Stop()
			tap.holdResults.Store(false)
			sentBeforeBreak := tap.sentNodes()
			ranBeforeBreak := finishedNodes(r.logs, run)
			heldAtBreak := missingResults(engine, run, ranBeforeBreak)
			ackedBeforeBreak := ackedNodes(engine, run)
			queuedAtBreak := engine.Queued(taxExecutorID)
			t.Logf("at the break: %d sent, %d ran, %d results held in flight, %d acknowledged, %d still queued, %d unique results",
				len(sentBeforeBreak), len(ranBeforeBreak), len(heldAtBreak), len(ackedBeforeBreak), queuedAtBreak, len(engine.UniqueResults()))
			require.NotEmpty(t, heldAtBreak)
			require.Positive(t, queuedAtBreak, "the break came too late: nothing left to resume with")

			require.Equal(t, addr, engine.StartAt(t, addr))
			secondBatch := queue("b", afterBreak)

			// Every task that ran, before or after the break, gets its result;
			// everything not sent before the break completes on its own.
			mustComplete := make(map[string]bool)
			for _, node := range firstBatch {
				if !sentBeforeBreak[node] {
					mustComplete[node] = true
				}
			}
			for _, node := range secondBatch {
				mustComplete[node] = true
			}
			for node := range ackedBeforeBreak {
				mustComplete[node] = true
			}
			if !assert.Eventually(t, func() bool {
				return len(missingResults(engine, run, finishedNodes(r.logs, run))) == 0 &&
					len(missingResults(engine, run, mustComplete)) == 0
			}, conditionTimeout, 4*conditionTick) {
				t.Fatalf("results missing after the restart: of tasks that ran %v, of tasks that must complete %v",
					missingResults(engine, run, finishedNodes(r.logs, run)), missingResults(engine, run, mustComplete))
			}
			for _, node := range heldAtBreak {
				assert.NotNil(t, engine.UniqueResults()[resultKey(run, node)], "result held at the break never redelivered: %s", node)
			}

			// What is left was sent before the break and never ran: lost with
			// the stream. Reassign it, as the engine would.
			lost := missingResults(engine, run, setOf(firstBatch))
			ran := finishedNodes(r.logs, run)
			for _, node := range lost {
				assert.True(t, sentBeforeBreak[node], "%s was never sent, yet has no result", node)
				assert.False(t, ran[node], "%s ran and has no result", node)
				assert.False(t, ackedBeforeBreak[node], "%s was acknowledged and has no result", node)
				engine.Enqueue(taxExecutorID, tasks[node])
			}
			t.Logf("%d tasks lost in transit at the break, re-enqueued: %s", len(lost), strings.Join(lost, " "))
			waitForUniqueResults(t, engine, beforeBreak+afterBreak, conditionTimeout)

			unique := engine.UniqueResults()
			assert.Len(t, unique, beforeBreak+afterBreak)
			for node, amount := range amounts {
				checkTaxResult(t, unique[resultKey(run, node)], run, node, amount)
			}
			t.Logf("%d duplicate results (resends), %d StreamTasks calls", engine.DuplicateResults(), engine.StreamCalls(taxExecutorID))
			require.NoError(t, r.stop(t))
			assert.Contains(t, engine.Unregistered(), taxExecutorID)
		})
	}
}

// ackedNodes returns the nodes of run runID whose tasks the executor
// acknowledged on ExecuteStream (taxTask's task ids are task-<run>-<node>).
func ackedNodes(engine *grpctest.Engine, runID string) map[string]bool {
	nodes := make(map[string]bool)
	for _, ack := range engine.Acks(taxExecutorID) {
		if node, ok := strings.CutPrefix(ack.GetTaskId(), "task-"+runID+"-"); ok {
			nodes[node] = true
		}
	}
	return nodes
}

func setOf(items []string) map[string]bool {
	set := make(map[string]bool, len(items))
	for _, item := range items {
		set[item] = true
	}
	return set
}

// TestGRPCEngineRestartBetweenHeartbeatsRegistersAgain restarts the engine
// between two heartbeats (every 10 s, the default): the new engine knows no
// executor, and, like Gamelan, answers heartbeats from executors it does not
// know with success, so that no heartbeat fails. The executor registers
// again within a few seconds anyway, because the connection to the engine
// was remade, and a task for it then completes, in every intake mode.
func TestGRPCEngineRestartBetweenHeartbeatsRegistersAgain(t *testing.T) {
	for _, intake := range []string{"push", "stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			t.Parallel()
			first := grpctest.NewEngine()
			addr := first.Start(t)
			vars := serviceEnv(addr, intake)
			vars["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "10"
			vars["GAMELAN_EXECUTOR_REREGISTER_INTERVAL_SECONDS"] = "0" // only the signs count
			r := startService(t, vars)
			waitForServing(t, first, r, taxExecutorID)

			first.Close()
			restarted := time.Now()
			second := grpctest.NewEngine()
			second.StartAt(t, addr)
			t.Cleanup(second.Close)
			reg := waitForRegistration(t, second, taxExecutorID)
			took := time.Since(restarted)
			assert.Less(t, took, 5*time.Second, "registered again %s after the restart", took)
			t.Logf("%s: registered with the restarted engine %s after it came back", intake, took.Round(time.Millisecond))
			assert.Empty(t, second.Heartbeats(taxExecutorID), "a heartbeat, not the remade connection, caused the registration")

			const run = "run-after-restart"
			if intake == "push" {
				ack, err := second.Push(deadline(t, conditionTimeout), reg.GetEndpoint(), taxPush(run, "n1", "10"))
				require.NoError(t, err)
				require.True(t, ack.GetAccepted(), "%v", ack)
			} else {
				second.Enqueue(taxExecutorID, taxTask(t, run, "n1", "10"))
			}
			waitForUniqueResults(t, second, 1, conditionTimeout)
			checkTaxResult(t, second.UniqueResults()[resultKey(run, "n1")], run, "n1", "10")
			waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
		})
	}
}
