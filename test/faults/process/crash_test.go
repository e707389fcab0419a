package process

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// TestExecutorCrashReassigned runs two replicas of a service serving
// payment-processor over gRPC push against the reference engine (a
// process, expiring executors whose heartbeats stop for 2s), submits a
// load through the engine's API, and stops one replica while it holds
// tasks:
//
//   - SIGKILL: the victim dies with its tasks. The engine notices the
//     missing heartbeats, reassigns them, and the survivor answers every
//     task.
//   - SIGSTOP: the victim freezes with its tasks. The engine reassigns them
//     the same way; then SIGCONT thaws the victim, which finishes the same
//     tasks and reports them late. The engine keeps each task's first
//     answer and drops the late ones as duplicates: they are counted per
//     task (the frozen replica's "task finished" lines name them) and
//     checked against the engine's duplicate counter.
//
// Both prove zero lost: every task submitted is answered, correctly, the
// victim's held tasks by the other replica. Recovery is the time from the
// signal to the first of the victim's tasks answered by the other replica
// (the engine's expiry is most of it).
func TestExecutorCrashReassigned(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
		t.Run(signalName(sig), func(t *testing.T) {
			t.Parallel()
			crashScenario(t, sig)
		})
	}
}

// crashTasks is how many tasks each crash scenario submits; each takes
// crashDelay in the gateway, ten at once per replica.
var crashTasks = testkit.Pick(60, 600)

const crashDelay = time.Second

func signalName(sig syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGSTOP: "SIGSTOP"}[sig]
}

// replicaEnv is a replica serving payment-processor over gRPC push to
// engine, heartbeating every second, logging every task it finishes.
func (e *devEngine) replicaEnv(instance string) map[string]string {
	env := loopbackEnv(instance, "debug") // "task finished" lines are debug
	env["GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET"] = e.grpcAddr
	env["GAMELAN_EXECUTOR_ENGINE_URL"] = "http://" + e.httpAddr
	env["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = e.kafkaAddr
	env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor"
	env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=grpc"
	env["PAYMENT_GATEWAY_DELAY"] = crashDelay.String()
	env["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "1"
	env["GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS"] = "3"
	return env
}

func crashScenario(t *testing.T, sig syscall.Signal) {
	name := signalName(sig)
	outcome := &testkit.Outcome{Scenario: "executor " + name + " with tasks in flight, reassigned by the engine", Notes: map[string]any{}}
	engine := startDevEngine(t, map[string]string{"DEVENGINE_HEARTBEAT_EXPIRY_SECONDS": "2"})
	victim := startExecutor(t, "victim", engine.replicaEnv("victim"))
	other := startExecutor(t, "other", engine.replicaEnv("other"))
	victimID, otherID := "executor-payment-processor-victim", "executor-payment-processor-other"
	victim.WaitReady(t, startTimeout)
	other.WaitReady(t, startTimeout)
	engine.api.WaitExecutors(t, startTimeout, victimID, otherID)

	ids := make([]string, crashTasks)
	amounts := make(map[string]float64, crashTasks)
	for i := range ids {
		task := engine.submitPayment(t, paymentAmount(i), fmt.Sprintf("C-%d", i))
		ids[i] = task.TaskID
		amounts[task.TaskID] = paymentAmount(i)
		outcome.Submitted(task.Key())
	}
	testkit.WaitFor(t, startTimeout, "the victim holding five tasks", func() (bool, string) {
		x, _ := engine.api.Executor(t, victimID)
		return x.AssignedTasks >= 5, fmt.Sprintf("%+v", x)
	})
	duplicatesBefore := engine.api.Summary(t).Counters.DuplicateResults
	signalled := time.Now()
	victim.Signal(t, sig)
	// The victim's tasks as of the signal: read after it, since a picture
	// taken before would be a second old by the time the signal went, and
	// the victim would have answered those tasks meanwhile. The engine
	// hands them out again only after the heartbeat expiry (2 s); a result
	// already on its way when the signal went may still land, and such a
	// task is told apart at the end by who answered it.
	var victimHeld []string
	for _, task := range engine.api.Tasks(t, ids) {
		if task.State == "ASSIGNED" && task.ExecutorID == victimID {
			victimHeld = append(victimHeld, task.TaskID)
		}
	}
	if sig == syscall.SIGKILL {
		require.Error(t, victim.Wait(t, stopTimeout), "a killed process does not exit cleanly")
	} else {
		t.Cleanup(func() { _ = victim.Cmd.Process.Signal(syscall.SIGCONT) })
	}

	engine.api.WaitAllFinal(t, answerTimeout, crashTasks)
	tasks := engine.api.Tasks(t, ids)
	var reassigned []testkit.EngineTask // held by the victim at the signal, answered by the other
	var lastAnswer time.Time
	wrong := 0
	for _, task := range tasks {
		outcome.AnswerCount(task.Key(), 1)
		if task.CompletedAt.After(lastAnswer) {
			lastAnswer = task.CompletedAt
		}
		if !checkPaymentTask(t, task, amounts[task.TaskID]) {
			wrong++
		}
		require.Less(t, wrong, 5, "too many wrong answers")
		if slices.Contains(victimHeld, task.TaskID) && task.ExecutorID != victimID {
			assert.Equal(t, otherID, task.ExecutorID, "%s reassigned", task.TaskID)
			assert.GreaterOrEqual(t, task.Deliveries, 2, "%s delivered again", task.TaskID)
			reassigned = append(reassigned, task)
		}
	}
	require.NotEmpty(t, reassigned, "tasks the victim held when stopped were reassigned")
	firstReassigned := slices.MinFunc(reassigned, func(a, b testkit.EngineTask) int { return a.CompletedAt.Compare(b.CompletedAt) })
	outcome.Recovery = firstReassigned.CompletedAt.Sub(signalled)
	outcome.Notes["heldAtSignal"] = len(victimHeld)
	outcome.Notes["reassigned"] = len(reassigned)
	outcome.Notes["allAnsweredMs"] = ms(lastAnswer.Sub(signalled))
	assert.NotEmpty(t, engine.LinesContaining("executor stopped heartbeating; reassigning its tasks"),
		"the engine reassigned the victim's tasks for its missing heartbeats")

	if sig == syscall.SIGSTOP {
		lateDuplicates(t, engine, victim, reassigned, duplicatesBefore, outcome)
		engine.api.WaitExecutors(t, startTimeout, victimID) // the thawed replica registers again
	} else {
		outcome.Notes["engineDuplicates"] = engine.api.Summary(t).Counters.DuplicateResults - duplicatesBefore
	}
	outcome.Check(t)
}

// lateDuplicates thaws the frozen victim and waits until it holds no task
// any more and the engine has dropped as duplicates the late results of the
// reassigned tasks it finished; each such task is counted answered twice.
// A task whose push was still on its way when the victim froze may never
// run there (the engine's call had ended by the thaw), so not every
// reassigned task is required to come back late, but one at least is.
func lateDuplicates(t *testing.T, engine *devEngine, victim *testkit.Service, reassigned []testkit.EngineTask, before int64, outcome *testkit.Outcome) {
	t.Helper()
	thawed := time.Now()
	victim.Signal(t, syscall.SIGCONT)
	finished := func() map[string]bool {
		runs := map[string]bool{}
		for _, line := range victim.Lines("task finished") {
			run, _ := line["run_id"].(string)
			runs[run] = true
		}
		return runs
	}
	var late []testkit.EngineTask
	var dropped int64
	testkit.WaitFor(t, answerTimeout, "the thawed replica's late results dropped as duplicates", func() (bool, string) {
		runs := finished()
		late = late[:0]
		for _, task := range reassigned {
			if runs[task.RunID] {
				late = append(late, task)
			}
		}
		dropped = engine.api.Summary(t).Counters.DuplicateResults - before
		held, ok := victim.Metric("gamelan_executor_tasks_admitted")
		return ok && held == 0 && len(late) > 0 && dropped >= int64(len(late)),
			fmt.Sprintf("%d of %d reassigned tasks finished by the thawed replica, %v still held, %d duplicates dropped",
				len(late), len(reassigned), held, dropped)
	})
	for _, task := range late {
		outcome.AnswerCount(task.Key(), 2)
		// The engine keeps the first answer: the other replica's.
		again := engine.api.Tasks(t, []string{task.TaskID})[0]
		assert.Equal(t, task.ExecutorID, again.ExecutorID, "%s keeps its first answer", task.TaskID)
	}
	outcome.Notes["lateDuplicates"] = len(late)
	outcome.Notes["reassignedNeverRunByVictim"] = len(reassigned) - len(late)
	outcome.Notes["engineDuplicates"] = dropped
	outcome.Notes["thawToDuplicatesMs"] = ms(time.Since(thawed))
}

// checkPaymentTask asserts that a final task completed the payment of
// amount.
func checkPaymentTask(t *testing.T, task testkit.EngineTask, amount float64) bool {
	t.Helper()
	if !assert.Equal(t, "COMPLETED", task.State, "%s on %s: %+v", task.TaskID, task.ExecutorID, task.Result) || !assert.NotNil(t, task.Result) {
		return false
	}
	transaction, _ := task.Result.Output["transactionId"].(string)
	return assert.Equal(t, amount, task.Result.Output["amount"], "%s: amount", task.TaskID) &&
		assert.True(t, strings.HasPrefix(transaction, "TXN-"), "%s: output %v", task.TaskID, task.Result.Output)
}
