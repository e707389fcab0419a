package e2e

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// The executor service against the reference engine, both real processes:
// every task goes in through the engine's HTTP API and its answer is read
// back there.

// sigterm is the graceful stop signal.
const sigterm = syscall.SIGTERM

// mixedWorkload is n tasks of each type, one in five with bad input.
func mixedWorkload(n int, types ...string) []testkit.TaskSpec {
	var specs []testkit.TaskSpec
	for i := range n {
		bad := i%5 == 4
		for _, typ := range types {
			switch {
			case typ == "calculate-tax" && bad:
				specs = append(specs, testkit.TaskSpec{ExecutorType: typ, Context: map[string]any{"amount": "lots"}})
			case typ == "calculate-tax":
				specs = append(specs, taxSpec(float64(100+i)+0.25))
			case typ == "order-validator" && bad:
				specs = append(specs, orderSpec(fmt.Sprintf("INVOICE-%d", i)))
			case typ == "order-validator":
				specs = append(specs, orderSpec(fmt.Sprintf("ORDER-%d", i)))
			case typ == "payment-processor" && bad:
				specs = append(specs, paymentSpec(-5, "C-bad"))
			case typ == "payment-processor":
				specs = append(specs, paymentSpec(float64(10+i), fmt.Sprintf("C-%d", i)))
			case typ == "notification-sender" && bad:
				specs = append(specs, notificationSpec("", "nobody"))
			case typ == "notification-sender":
				specs = append(specs, notificationSpec(fmt.Sprintf("ops-%d@example.com", i), "done"))
			}
		}
	}
	return specs
}

// checkDelivery checks that every task went to the executor id its type
// maps to, over the transport its type maps to, in one delivery.
func checkDelivery(t *testing.T, tasks []testkit.EngineTask, executorIDs, transports map[string]string) {
	t.Helper()
	for _, task := range tasks {
		assert.Equal(t, executorIDs[task.ExecutorType], task.ExecutorID, "executor of %s", task)
		assert.Equal(t, transports[task.ExecutorType], task.Transport, "transport of %s", task)
		assert.Equal(t, 1, task.Deliveries, "deliveries of %s", task)
	}
}

// TestEngineIntakeModes runs one executor process per gRPC intake mode
// (push, stream, bidi), each against its own engine, serving calculate-tax
// and order-validator: every task is answered right, by that process,
// over that mode (the task's transport is grpc-push, grpc-stream or
// grpc-bidi), in one delivery, once the engine has taken the executor's
// stream (a probe task shows it). Over bidi, a payment-processor task routed
// over gRPC and held by a 30s gateway is cancelled through the API: the
// cancellation reaches the handler over the stream and the task ends
// CANCELLED long before the gateway would have answered.
func TestEngineIntakeModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"push", "stream", "bidi"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			engine := startEngine(t, "engine-"+mode, nil)
			env := engine.executorEnv(mode)
			env["GAMELAN_EXECUTOR_GRPC_INTAKE"] = mode
			env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax,order-validator"
			ids := map[string]string{
				"calculate-tax":   "executor-calculate-tax-" + mode,
				"order-validator": "executor-order-validator-" + mode,
			}
			if mode == "bidi" {
				env["GAMELAN_EXECUTOR_ENABLED_TYPES"] += ",payment-processor"
				env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=grpc"
				env["PAYMENT_GATEWAY_DELAY"] = "30s"
				ids["payment-processor"] = "executor-payment-processor-bidi"
			}
			executor := engine.startExecutor(t, "executor-"+mode, env, slices.Collect(maps.Values(ids))...)

			transport := "grpc-" + mode
			before := engine.api.AwaitTransport(t, startTimeout, answerTimeout, taxSpec(1), transport)
			specs := mixedWorkload(20, "calculate-tax", "order-validator")
			taskIDs := engine.api.SubmitAll(t, specs)
			summary := engine.api.WaitAllFinal(t, answerTimeout, before.Tasks+len(specs)).Since(before)
			tasks := engine.api.Tasks(t, taskIDs)
			checkAnswers(t, specs, tasks)
			checkDelivery(t, tasks, ids, map[string]string{"calculate-tax": transport, "order-validator": transport})
			assert.Equal(t, map[string]int{"COMPLETED": 32, "FAILED": 8}, summary.ByState)
			assert.Equal(t, map[string]int{"INVALID_INPUT": 4, "INVALID_ORDER": 4}, summary.FailuresByCode)
			assert.Equal(t, []string{transport}, slices.Sorted(maps.Keys(summary.ByTransport)), "transports of the summary")
			assert.Equal(t, len(specs), summary.ByTransport[transport].Answered)
			assert.Zero(t, summary.Counters.UnknownResults)
			assert.Zero(t, summary.Counters.RefusedCalls)

			if mode == "bidi" {
				cancelOverBidi(t, engine, executor, ids["payment-processor"])
			}
		})
	}
}

// cancelOverBidi submits a payment that the gateway holds for 30s, waits
// until the engine has delivered it over the stream and the executor runs
// it, cancels it through the API, and checks that it ends CANCELLED.
func cancelOverBidi(t *testing.T, engine *engineProcess, executor *process, executorID string) {
	t.Helper()
	payment := engine.api.Submit(t, paymentSpec(25, "C-cancel"))
	engine.api.WaitTasks(t, startTimeout, "the payment delivered over the stream", []string{payment.TaskID}, func(tasks []testkit.EngineTask) bool {
		return tasks[0].State == "ASSIGNED" && tasks[0].Transport == "grpc-bidi"
	})
	cancelledAt := time.Now()
	require.Equal(t, http.StatusAccepted, engine.api.Cancel(t, payment.TaskID), "cancel a task running over bidi")
	tasks := engine.api.WaitTasks(t, 10*time.Second, "the cancelled payment answered", []string{payment.TaskID}, func(tasks []testkit.EngineTask) bool {
		return tasks[0].Final()
	})
	task := tasks[0]
	require.Equal(t, "CANCELLED", task.State, "%s", task)
	require.NotNil(t, task.Result.Error, "%s", task)
	assert.Equal(t, "CANCELLED", task.Result.Error.Code, "%s", task)
	assert.Equal(t, executorID, task.ExecutorID)
	assert.Less(t, task.CompletedAt.Sub(cancelledAt), 10*time.Second, "answered at once, not after the gateway")
	// The executor logs the cancellation once the handler is cancelled,
	// which may be after its result reached the engine.
	cancellation := executor.waitForLine(t, 5*time.Second, "cancellation from the engine")
	assert.Len(t, executor.linesWith("cancellation from the engine"), 1, "the executor received one cancellation")
	assert.Equal(t, payment.TaskID, cancellation["task_id"])
	assert.Equal(t, true, cancellation["found"], "the cancellation found the running task")
	assert.Equal(t, http.StatusConflict, engine.api.Cancel(t, payment.TaskID), "a finished task cannot be cancelled")
}

// TestEngineKafkaAndREST serves payment-processor over Kafka (its declared
// communication type, through the engine's embedded broker) and
// calculate-tax over REST (an override) from one process, with the
// control plane over gRPC or HTTP and the REST results over Kafka or
// gRPC: the registry shows each type with its communication type and how
// it registered, and every task is answered right over kafka or rest.
func TestEngineKafkaAndREST(t *testing.T) {
	t.Parallel()
	for _, variant := range []struct{ registrar, restResults string }{
		{"grpc", "kafka"},
		{"http", "grpc"},
	} {
		name := "registrar-" + variant.registrar + "-rest-results-" + variant.restResults
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			engine := startEngine(t, "engine-"+name, nil)
			instance := "kr-" + variant.registrar
			env := engine.executorEnv(instance)
			env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor,calculate-tax"
			env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=rest"
			env["GAMELAN_EXECUTOR_REGISTRAR"] = variant.registrar
			env["GAMELAN_EXECUTOR_REST_RESULT_SINK"] = variant.restResults
			ids := map[string]string{
				"payment-processor": "executor-payment-processor", // Kafka replicas share one id
				"calculate-tax":     "executor-calculate-tax-" + instance,
			}
			engine.startExecutor(t, "executor-"+name, env, slices.Collect(maps.Values(ids))...)

			payment, _ := engine.api.Executor(t, ids["payment-processor"])
			assert.Equal(t, "KAFKA", payment.CommunicationType)
			assert.Equal(t, variant.registrar, payment.RegisteredVia)
			assert.Equal(t, 10, payment.MaxConcurrentTasks)
			tax, _ := engine.api.Executor(t, ids["calculate-tax"])
			assert.Equal(t, "REST", tax.CommunicationType)
			assert.Equal(t, variant.registrar, tax.RegisteredVia)
			assert.True(t, strings.HasPrefix(tax.Endpoint, "http://127.0.0.1:"), "REST endpoint %q", tax.Endpoint)
			assert.Equal(t, []string{"calculate-tax"}, tax.SupportedNodeTypes)

			specs := mixedWorkload(15, "payment-processor", "calculate-tax")
			taskIDs := engine.api.SubmitAll(t, specs)
			summary := engine.api.WaitAllFinal(t, answerTimeout, len(specs))
			tasks := engine.api.Tasks(t, taskIDs)
			checkAnswers(t, specs, tasks)
			checkDelivery(t, tasks, ids, map[string]string{"payment-processor": "kafka", "calculate-tax": "rest"})
			assert.Equal(t, 15, summary.ByTransport["kafka"].Answered)
			assert.Equal(t, 15, summary.ByTransport["rest"].Answered)
			assert.Zero(t, summary.Counters.UnknownResults)
		})
	}
}

// TestEngineMultiTypeProcess runs one process hosting all four example
// types with their declared transports: three over gRPC push from one
// push server, payment-processor over Kafka. All four register from the
// process, and every task of every type is answered right over its
// transport.
func TestEngineMultiTypeProcess(t *testing.T) {
	t.Parallel()
	engine := startEngine(t, "engine-multi", nil)
	ids := map[string]string{
		"calculate-tax":       "executor-calculate-tax-multi",
		"order-validator":     "executor-order-validator-multi",
		"notification-sender": "executor-notification-sender-multi",
		"payment-processor":   "executor-payment-processor",
	}
	executor := engine.startExecutor(t, "executor-multi", engine.executorEnv("multi"), slices.Collect(maps.Values(ids))...)

	registered := executor.linesWith("registered")
	assert.Len(t, registered, 4, "the process registered four types")
	endpoints := map[string]bool{}
	for _, e := range engine.api.Executors(t) {
		if e.CommunicationType == "GRPC" {
			endpoints[e.Endpoint] = true
		}
	}
	assert.Len(t, endpoints, 1, "the three gRPC types share the process's push server: %v", endpoints)

	specs := mixedWorkload(10, "calculate-tax", "order-validator", "notification-sender", "payment-processor")
	taskIDs := engine.api.SubmitAll(t, specs)
	summary := engine.api.WaitAllFinal(t, answerTimeout, len(specs))
	tasks := engine.api.Tasks(t, taskIDs)
	checkAnswers(t, specs, tasks)
	checkDelivery(t, tasks, ids, map[string]string{
		"calculate-tax": "grpc-push", "order-validator": "grpc-push", "notification-sender": "grpc-push", "payment-processor": "kafka",
	})
	assert.Equal(t, map[string]int{"COMPLETED": 32, "FAILED": 8}, summary.ByState)
	assert.Equal(t, 30, summary.ByTransport["grpc-push"].Answered)
	assert.Equal(t, 10, summary.ByTransport["kafka"].Answered)

	// Stopped, the process unregisters its gRPC types; the Kafka id stays,
	// shared with replicas that may still serve it.
	executor.signal(t, sigterm)
	require.NoError(t, executor.wait(t), "the executor exits cleanly")
	var listed []string
	for _, e := range engine.api.Executors(t) {
		listed = append(listed, e.ExecutorID)
	}
	assert.Equal(t, []string{ids["payment-processor"]}, listed, "the registry after the stop")
	engine.stop(t)
}

// replicaEnv is a replica of a service that serves payment-processor over
// gRPC push, each task held by the gateway for delay, logging every
// finished task (debug).
func replicaEnv(engine *engineProcess, instance, delay string) map[string]string {
	env := engine.executorEnv(instance)
	env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor"
	env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=grpc"
	env["GAMELAN_EXECUTOR_LOG_LEVEL"] = "debug"
	env["PAYMENT_GATEWAY_DELAY"] = delay
	return env
}

// startHeartbeatingReplica starts a payment-processor replica with a 1s
// gateway delay that heartbeats every second, so that an engine with a 2s
// expiry notices within a few seconds when it stops heartbeating.
func startHeartbeatingReplica(t *testing.T, engine *engineProcess, instance string) *process {
	env := replicaEnv(engine, instance, "1s")
	env["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "1"
	env["GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS"] = "3"
	return engine.startExecutor(t, instance, env, paymentID(instance))
}

// pushedTo returns the ids of the tasks executorID holds, accepted over push.
func pushedTo(tasks []testkit.EngineTask, executorID string) []string {
	var ids []string
	for _, task := range tasks {
		if task.State == "ASSIGNED" && task.ExecutorID == executorID && task.Transport == "grpc-push" {
			ids = append(ids, task.TaskID)
		}
	}
	return ids
}

// paymentIDs are the executor ids of the payment-processor replicas.
func paymentID(instance string) string { return "executor-payment-processor-" + instance }

// TestEngineReplicasShareLoad runs two replicas of one service (same NAME,
// different INSTANCE_ID) serving payment-processor over gRPC: the engine
// never gives either more than its max concurrent tasks, both receive
// tasks, every task is answered once, and what the engine attributes to
// each replica is exactly what that process logged running.
func TestEngineReplicasShareLoad(t *testing.T) {
	t.Parallel()
	engine := startEngine(t, "engine-replicas", nil)
	replicas := map[string]*process{}
	for _, instance := range []string{"r1", "r2"} {
		replicas[paymentID(instance)] = engine.startExecutor(t, instance, replicaEnv(engine, instance, "100ms"), paymentID(instance))
	}

	specs := mixedWorkload(60, "payment-processor")
	taskIDs := engine.api.SubmitAll(t, specs)
	peak := map[string]int{}
	var summary testkit.EngineSummary
	testkit.WaitFor(t, answerTimeout, "all tasks answered", func() (bool, string) {
		for _, e := range engine.api.Executors(t) {
			peak[e.ExecutorID] = max(peak[e.ExecutorID], e.AssignedTasks)
			require.LessOrEqual(t, e.AssignedTasks, e.MaxConcurrentTasks, "load of %s", e.ExecutorID)
		}
		summary = engine.api.Summary(t)
		return summary.Unfinished() == 0, fmt.Sprint(summary.ByState)
	})
	tasks := engine.api.Tasks(t, taskIDs)
	checkAnswers(t, specs, tasks)

	byReplica := map[string][]string{} // executor id -> run ids
	for _, task := range tasks {
		byReplica[task.ExecutorID] = append(byReplica[task.ExecutorID], task.RunID)
		assert.Equal(t, 1, task.Deliveries, "%s", task)
		assert.Equal(t, "grpc-push", task.Transport, "%s", task)
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(replicas)), slices.Collect(maps.Keys(byReplica)), "executors that answered")
	for id, p := range replicas {
		assert.NotEmpty(t, byReplica[id], "%s received tasks", id)
		assert.Positive(t, peak[id], "%s was seen holding tasks", id)
		assert.ElementsMatch(t, byReplica[id], slices.Collect(maps.Keys(finishedRunsOf(p))), "tasks %s ran vs tasks the engine gave it", id)
	}
	assert.Zero(t, summary.Counters.DuplicateResults, "no task ran twice")
	t.Logf("tasks per replica: r1 %d, r2 %d; peak load %v", len(byReplica[paymentID("r1")]), len(byReplica[paymentID("r2")]), peak)
}

// TestEngineSIGKILLReassigns kills one of two replicas with SIGKILL while
// it holds tasks (accepted over push, held by a 1s gateway) and more load
// arrives. The engine (heartbeat expiry 2s; the replicas heartbeat every
// second) reassigns what the dead replica held to the survivor after the
// expiry, and every task submitted ends COMPLETED with the right answer.
func TestEngineSIGKILLReassigns(t *testing.T) {
	t.Parallel()
	engine := startEngine(t, "engine-sigkill", map[string]string{"DEVENGINE_HEARTBEAT_EXPIRY_SECONDS": "2"})
	start := func(instance string) *process { return startHeartbeatingReplica(t, engine, instance) }
	victim, survivor := start("victim"), start("survivor")

	specs := mixedWorkload(30, "payment-processor")
	taskIDs := engine.api.SubmitAll(t, specs)
	victimID, survivorID := paymentID("victim"), paymentID("survivor")
	accepted := func(task testkit.EngineTask) bool {
		return task.State == "ASSIGNED" && task.ExecutorID == victimID && task.Transport == "grpc-push" && task.Deliveries == 1
	}
	engine.api.WaitTasks(t, startTimeout, "the victim holds five tasks", taskIDs, func(tasks []testkit.EngineTask) bool {
		n := 0
		for _, task := range tasks {
			if accepted(task) {
				n++
			}
		}
		return n >= 5
	})
	victim.signal(t, syscall.SIGKILL)
	require.Error(t, victim.wait(t), "a killed process does not exit cleanly")
	killedAt := time.Now()
	var held []string
	for _, task := range engine.api.Tasks(t, taskIDs) {
		if accepted(task) {
			held = append(held, task.TaskID)
		}
	}
	require.NotEmpty(t, held, "tasks the victim had accepted when it died")

	more := mixedWorkload(10, "payment-processor")
	specs = append(specs, more...)
	taskIDs = append(taskIDs, engine.api.SubmitAll(t, more)...)
	engine.api.WaitAllFinal(t, answerTimeout, len(specs))
	tasks := engine.api.Tasks(t, taskIDs)
	checkAnswers(t, specs, tasks)

	ranBySurvivor := finishedRunsOf(survivor)
	for _, task := range engine.api.Tasks(t, held) {
		assert.Equal(t, survivorID, task.ExecutorID, "%s was reassigned", task)
		assert.GreaterOrEqual(t, task.Deliveries, 2, "%s", task)
		assert.GreaterOrEqual(t, task.CompletedAt.Sub(killedAt), time.Second,
			"%s answered only after the victim's heartbeats could have expired", task)
		assert.Contains(t, ranBySurvivor, task.RunID, "the survivor ran %s", task)
	}
	reassigned := engine.linesContaining("executor stopped heartbeating; reassigning its tasks")
	assert.True(t, slices.ContainsFunc(reassigned, func(line string) bool { return strings.Contains(line, "executor_id="+victimID) }),
		"the engine logged reassigning the victim's tasks: %v", reassigned)
	if e, ok := engine.api.Executor(t, victimID); ok {
		assert.False(t, e.Healthy, "the victim is no longer healthy")
	}
	t.Logf("the victim held %d tasks when killed; all %d tasks answered", len(held), len(tasks))
}

// TestEngineSIGTERMDrains stops the only replica with SIGTERM while it
// holds its full capacity of tasks (accepted over push, held by a 500ms
// gateway) and more wait in the engine. It answers every task it accepted
// before stopping and no new one (nothing is left ASSIGNED to it),
// unregisters and exits 0; the tasks never delivered stay PENDING and are
// answered by the next process to start.
func TestEngineSIGTERMDrains(t *testing.T) {
	t.Parallel()
	engine := startEngine(t, "engine-sigterm", nil)
	first := engine.startExecutor(t, "first", replicaEnv(engine, "first", "500ms"), paymentID("first"))
	firstID := paymentID("first")

	specs := mixedWorkload(30, "payment-processor")
	taskIDs := engine.api.SubmitAll(t, specs)
	var acceptedBefore []string
	engine.api.WaitTasks(t, startTimeout, "the executor at full capacity", taskIDs, func(tasks []testkit.EngineTask) bool {
		acceptedBefore = pushedTo(tasks, firstID)
		return len(acceptedBefore) == 10
	})
	first.signal(t, sigterm)
	require.NoError(t, first.wait(t), "SIGTERM: clean exit; stderr: %s", first.stderr.String())

	tasks := engine.api.Tasks(t, taskIDs)
	var answeredByFirst []testkit.EngineTask
	var pending []string
	for _, task := range tasks {
		switch {
		case task.Final() && task.ExecutorID == firstID:
			answeredByFirst = append(answeredByFirst, task)
		case task.State == "PENDING":
			pending = append(pending, task.TaskID)
		default:
			t.Errorf("after the drain: %s", task)
		}
	}
	var answeredIDs []string
	for _, task := range answeredByFirst {
		answeredIDs = append(answeredIDs, task.TaskID)
	}
	assert.Subset(t, answeredIDs, acceptedBefore, "every task accepted before SIGTERM is answered")
	assert.NotEmpty(t, pending, "tasks never delivered wait in the engine")
	assert.ElementsMatch(t, runsOf(answeredByFirst), slices.Collect(maps.Keys(finishedRunsOf(first))), "tasks the executor ran vs tasks answered by it")
	drained := first.waitForLine(t, time.Second, "runtime drained")
	assert.Equal(t, float64(len(answeredByFirst)), drained["results_delivered"], "results delivered: %v", drained)
	assert.Equal(t, float64(0), drained["results_undelivered"], "%v", drained)
	assert.NotEmpty(t, first.linesWith("unregistered"), "the executor unregistered")
	_, listed := engine.api.Executor(t, firstID)
	assert.False(t, listed, "the registry forgot the stopped executor")
	summary := engine.api.Summary(t)
	assert.Equal(t, len(pending), summary.ByState["PENDING"], "tasks still waiting: %v", summary.ByState)
	assert.Zero(t, summary.ByState["ASSIGNED"], "nothing is held by the stopped executor")

	engine.startExecutor(t, "second", replicaEnv(engine, "second", "10ms"), paymentID("second"))
	engine.api.WaitAllFinal(t, answerTimeout, len(specs))
	tasks = engine.api.Tasks(t, taskIDs)
	checkAnswers(t, specs, tasks)
	for _, task := range engine.api.Tasks(t, pending) {
		assert.Equal(t, paymentID("second"), task.ExecutorID, "%s", task)
	}
	refused := 0
	for _, task := range engine.api.Tasks(t, pending) {
		if task.Deliveries > 1 {
			refused++ // pushed to the draining executor, refused, delivered again
		}
	}
	t.Logf("SIGTERM with %d tasks accepted: %d answered by the stopping executor, %d left pending (%d of them refused by it while draining) and answered by the next",
		len(acceptedBefore), len(answeredByFirst), len(pending), refused)
}

// TestEngineJWT runs the engine with a token secret. An executor with the
// same secret registers, heartbeats and answers over gRPC push (the
// engine's pushes carry its token, which the executor requires and
// verifies) and over Kafka (records carry the executor's token, which the
// engine verifies), with no call refused. Executors with another secret,
// registering over gRPC or over the Kafka registration topic, never
// appear in the registry, and the engine counts their refused calls.
func TestEngineJWT(t *testing.T) {
	t.Parallel()
	const secret = "e2e-secret-of-at-least-32-bytes-0123456789"
	engine := startEngine(t, "engine-jwt", map[string]string{"DEVENGINE_JWT_SECRET": secret})
	env := engine.executorEnv("trusted")
	env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax,payment-processor"
	env["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	env["GAMELAN_EXECUTOR_JWT_INBOUND"] = "required"
	env["GAMELAN_EXECUTOR_JWT_INBOUND_ISSUER"] = "gamelan-engine"
	ids := map[string]string{"calculate-tax": "executor-calculate-tax-trusted", "payment-processor": "executor-payment-processor"}
	trusted := engine.startExecutor(t, "trusted", env, slices.Collect(maps.Values(ids))...)
	assert.Empty(t, trusted.linesContaining("INBOUND AUTHENTICATION IS OFF"))

	specs := mixedWorkload(10, "calculate-tax", "payment-processor")
	taskIDs := engine.api.SubmitAll(t, specs)
	summary := engine.api.WaitAllFinal(t, answerTimeout, len(specs))
	tasks := engine.api.Tasks(t, taskIDs)
	checkAnswers(t, specs, tasks)
	checkDelivery(t, tasks, ids, map[string]string{"calculate-tax": "grpc-push", "payment-processor": "kafka"})
	require.Zero(t, summary.Counters.RefusedCalls, "no call of the trusted executor refused")
	assert.Empty(t, trusted.linesWith("push task refused: authentication failed"), "every push carried a valid token")

	for _, registrar := range []string{"grpc", "kafka"} {
		env := engine.executorEnv("untrusted-" + registrar)
		env["GAMELAN_EXECUTOR_NAME"] = "intruder-" + registrar
		env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "calculate-tax"
		env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=" + registrar
		env["GAMELAN_EXECUTOR_REGISTRAR"] = registrar
		env["GAMELAN_EXECUTOR_JWT_SECRET"] = "another-secret-of-at-least-32-bytes-987654"
		env["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "1"
		before := engine.api.Summary(t).Counters.RefusedCalls
		intruder := startProcess(t, "intruder-"+registrar, env)
		seen := []int64{before}
		testkit.WaitFor(t, startTimeout, "the engine refusing the intruder's calls, again and again", func() (bool, string) {
			if refused := engine.api.Summary(t).Counters.RefusedCalls; refused > seen[len(seen)-1] {
				seen = append(seen, refused)
			}
			return len(seen) >= 3, fmt.Sprintf("refused calls so far: %v", seen)
		})
		for _, e := range engine.api.Executors(t) {
			assert.False(t, strings.HasPrefix(e.ExecutorID, "intruder-"), "the registry lists %s", e.ExecutorID)
		}
		if registrar == "grpc" {
			failed := intruder.waitForLine(t, startTimeout, "registration failed")
			assert.Contains(t, failed["error"], "Unauthenticated", "%v", failed)
			resp, err := http.Get(intruder.baseURL + "/q/health/ready")
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "an executor the engine refuses is not ready")
		}
		assert.NotContains(t, engine.stderr.String()+engine.text(), "another-secret", "the engine never logs a secret")
	}

	// The executor does check the engine's token: one that expects
	// another issuer refuses every push, and runs none of its tasks.
	env = engine.executorEnv("picky")
	env["GAMELAN_EXECUTOR_NAME"] = "picky"
	env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "order-validator"
	env["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	env["GAMELAN_EXECUTOR_JWT_INBOUND_ISSUER"] = "another-engine"
	picky := engine.startExecutor(t, "picky", env, "picky-order-validator-picky")
	order := engine.api.Submit(t, orderSpec("ORDER-7"))
	refusal := picky.waitForLine(t, startTimeout, "push task refused: authentication failed")
	assert.Equal(t, order.RunID, refusal["run_id"], "%v", refusal)
	assert.Contains(t, refusal["error"], "issuer", "%v", refusal)
	engine.api.WaitTasks(t, startTimeout, "the refused push tried again", []string{order.TaskID}, func(tasks []testkit.EngineTask) bool {
		return tasks[0].Deliveries >= 2
	})
	assert.False(t, engine.api.Task(t, order.TaskID).Final(), "a task whose push was refused is not answered")
	assert.Empty(t, picky.linesWith("task finished"), "the picky executor ran nothing")

	// The trusted executor still takes every task.
	task := engine.api.Submit(t, taxSpec(40))
	tasks = engine.api.WaitTasks(t, answerTimeout, "a task after the intruders", []string{task.TaskID}, func(tasks []testkit.EngineTask) bool { return tasks[0].Final() })
	checkAnswer(t, taxSpec(40), tasks[0])
	assert.Equal(t, ids["calculate-tax"], tasks[0].ExecutorID)
}

// TestEngineStopsWithStreamsOpen stops the engine (SIGTERM) while two
// executors hold streams open on it, one StreamTasks and one
// ExecuteStream: the engine ends them and exits 0 at once rather than
// waiting for the executors to close them. The executors, their intake
// gone, are no longer ready, and still stop cleanly.
func TestEngineStopsWithStreamsOpen(t *testing.T) {
	t.Parallel()
	engine := startEngine(t, "engine-streams", nil)
	var executors []*process
	for mode, typ := range map[string]string{"stream": "calculate-tax", "bidi": "order-validator"} {
		env := engine.executorEnv("open-" + mode)
		env["GAMELAN_EXECUTOR_GRPC_INTAKE"] = mode
		env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = typ
		executors = append(executors, engine.startExecutor(t, mode, env, "executor-"+typ+"-open-"+mode))
	}
	// Tasks prove that the engine holds both streams.
	engine.api.AwaitTransport(t, startTimeout, answerTimeout, taxSpec(1), "grpc-stream")
	engine.api.AwaitTransport(t, startTimeout, answerTimeout, orderSpec("ORDER-1"), "grpc-bidi")

	engine.signal(t, sigterm)
	select {
	case <-engine.exited:
		require.NoError(t, engine.waitErr, "the engine exits 0; stderr:\n%s", engine.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("the engine did not exit within 10s of SIGTERM while executors held streams open")
	}
	for _, p := range executors {
		testkit.WaitFor(t, startTimeout, p.name+" not ready without its engine", func() (bool, string) {
			resp, err := http.Get(p.baseURL + "/q/health/ready")
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusServiceUnavailable, resp.Status
		})
		p.signal(t, sigterm)
		require.NoError(t, p.wait(t), "%s exits cleanly without its engine", p.name)
	}
}

// TestEngineFrozenExecutorIsDeduplicated freezes one of two replicas
// (SIGSTOP) while it holds tasks: after the heartbeat expiry the engine
// reassigns them and the other replica answers them all. Thawed
// (SIGCONT), the frozen replica finishes the same tasks and reports them
// late: the engine drops those results as duplicates (each task keeps its
// first answer), takes the replica back once it heartbeats or registers
// again, and gives it new tasks.
func TestEngineFrozenExecutorIsDeduplicated(t *testing.T) {
	t.Parallel()
	engine := startEngine(t, "engine-sigstop", map[string]string{"DEVENGINE_HEARTBEAT_EXPIRY_SECONDS": "2"})
	start := func(instance string) *process { return startHeartbeatingReplica(t, engine, instance) }
	frozen, steady := start("frozen"), start("steady")
	frozenID, steadyID := paymentID("frozen"), paymentID("steady")

	specs := mixedWorkload(20, "payment-processor")
	taskIDs := engine.api.SubmitAll(t, specs)
	var held []string
	engine.api.WaitTasks(t, startTimeout, "the frozen replica holding five tasks", taskIDs, func(tasks []testkit.EngineTask) bool {
		held = pushedTo(tasks, frozenID)
		return len(held) >= 5
	})
	frozen.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { _ = frozen.cmd.Process.Signal(syscall.SIGCONT) })
	before := engine.api.Summary(t)
	summary := engine.api.WaitAllFinal(t, answerTimeout, len(specs))
	checkAnswers(t, specs, engine.api.Tasks(t, taskIDs))
	for _, task := range engine.api.Tasks(t, held) {
		assert.Equal(t, steadyID, task.ExecutorID, "%s was reassigned", task)
	}
	assert.Contains(t, finishedRunsOf(steady), engine.api.Task(t, held[0]).RunID, "the steady replica ran the frozen one's tasks")

	frozen.signal(t, syscall.SIGCONT)
	testkit.WaitFor(t, answerTimeout, "the thawed replica's late results dropped as duplicates", func() (bool, string) {
		summary = engine.api.Summary(t)
		late := summary.Counters.DuplicateResults - before.Counters.DuplicateResults
		return late >= int64(len(held)), fmt.Sprintf("%d duplicates, %d tasks held", late, len(held))
	})
	for _, task := range engine.api.Tasks(t, held) {
		assert.Equal(t, steadyID, task.ExecutorID, "%s keeps its first answer", task)
		assert.Equal(t, "COMPLETED", task.State, "%s keeps its first answer", task)
	}
	assert.Equal(t, len(specs), summary.Tasks)
	assert.Zero(t, summary.Unfinished())
	engine.api.WaitExecutors(t, startTimeout, frozenID)

	more := mixedWorkload(4, "payment-processor")
	moreIDs := engine.api.SubmitAll(t, more)
	engine.api.WaitAllFinal(t, answerTimeout, len(specs)+len(more))
	tasks := engine.api.Tasks(t, moreIDs)
	checkAnswers(t, more, tasks)
	assert.True(t, slices.ContainsFunc(tasks, func(task testkit.EngineTask) bool { return task.ExecutorID == frozenID }),
		"the thawed replica takes tasks again: %s", testkit.DescribeTasks(tasks))
}
