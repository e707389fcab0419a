package process

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// The SIGTERM scenarios: an executor process holding a few hundred long
// payment-processor tasks (its gateway takes sigtermDelay, ten run at once,
// the rest wait in its queue) is stopped with SIGTERM. Within its shutdown
// deadline (SHUTDOWN_TIMEOUT_SECONDS, then RESULT_FLUSH_TIMEOUT_SECONDS for
// the last results) every task it held is either answered (drained) or
// handed back, and it exits 0; then another process answers the handed-back
// ones, quickly (its gateway answers in 10ms): zero lost.

// sigtermTasks is how many tasks the stopped executor holds.
var sigtermTasks = testkit.Pick(200, 1000)

// The stopped executor's settings: a task takes sigtermDelay, the drain
// waits sigtermDrain for running tasks, results then get sigtermFlush.
// The drain outlasts one task, so that some are drained and the rest
// handed back.
const (
	sigtermDelay = 3 * time.Second
	sigtermDrain = 4 * time.Second
	sigtermFlush = 5 * time.Second
	// exitSlack is what a busy machine may add to the deadline before the
	// process is seen to exit.
	exitSlack = 10 * time.Second
)

// admittedMetric is the service's gauge of tasks queued or running.
const admittedMetric = "gamelan_executor_tasks_admitted"

// sigtermEnv is the environment of an executor serving payment-processor
// with the given gateway delay and the scenario's shutdown deadlines.
func sigtermEnv(instance string, delay time.Duration) map[string]string {
	env := loopbackEnv(instance, "info")
	env["GAMELAN_EXECUTOR_ENABLED_TYPES"] = "payment-processor"
	env["PAYMENT_GATEWAY_DELAY"] = delay.String()
	env["GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS"] = strconv.Itoa(int(sigtermDrain / time.Second))
	env["GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS"] = strconv.Itoa(int(sigtermFlush / time.Second))
	// Room for every task: ten run (the type's limit), the rest queue.
	env["GAMELAN_EXECUTOR_QUEUE_SIZE"] = strconv.Itoa(sigtermTasks + 100)
	env["GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE"] = strconv.Itoa(sigtermTasks + 100)
	return env
}

// waitInFlight waits until the executor holds every task it was given but
// the answered ones (its admitted gauge), and returns the gauge.
func waitInFlight(t *testing.T, executor *testkit.Service, total int, answered func() int) int {
	t.Helper()
	var admitted float64
	require.Eventually(t, func() bool {
		var ok bool
		admitted, ok = executor.Metric(admittedMetric)
		return ok && int(admitted)+answered() >= total
	}, answerTimeout, 20*time.Millisecond, "the executor never held all %d tasks (admitted %v)", total, admitted)
	return int(admitted)
}

// stopWithin sends SIGTERM and checks that the process exits 0 within its
// deadline (drain, then flush, plus slack for a busy machine); it returns
// how long it took.
func stopWithin(t *testing.T, executor *testkit.Service) (signalled time.Time, took time.Duration) {
	t.Helper()
	signalled = time.Now()
	executor.Signal(t, syscall.SIGTERM)
	require.NoError(t, executor.Wait(t, stopTimeout), "SIGTERM: exit 0; stderr: %s", executor.Stderr())
	took = executor.ExitedAt().Sub(signalled)
	assert.Less(t, took, sigtermDrain+sigtermFlush+exitSlack, "the executor exits within its shutdown deadline")
	return signalled, took
}

// paymentAmount is the amount of the i-th payment.
func paymentAmount(i int) float64 { return float64(i)*0.75 + 10.25 }

// TestExecutorSIGTERMGRPC stops an executor process holding sigtermTasks
// tasks pushed over gRPC (grpctest's engine, in the test, pushing as the
// Gamelan engine does). A pushed task cannot be handed back on the wire:
// the executor drains what it can, and at the drain deadline answers the
// rest FAILED SHUTDOWN, retryable, which is how a push executor hands a
// task back (the engine runs it elsewhere). It proves: every task held
// gets exactly one result before the process exits (COMPLETED or FAILED
// SHUTDOWN, nothing else, none missing), the process exits 0 within its
// deadline, and a replica, pushed each handed-back task, answers it.
func TestExecutorSIGTERMGRPC(t *testing.T) {
	t.Parallel()
	outcome := &testkit.Outcome{Scenario: "executor SIGTERM with tasks in flight, grpc push", Notes: map[string]any{}}
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	start := func(instance string, delay time.Duration) (*testkit.Service, string) {
		env := sigtermEnv(instance, delay)
		env["GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET"] = addr
		env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=grpc"
		return startExecutor(t, instance, env), "executor-payment-processor-" + instance
	}
	victim, victimID := start("victim", sigtermDelay)
	replica, replicaID := start("replica", 10*time.Millisecond)
	victim.WaitReady(t, startTimeout)
	replica.WaitReady(t, startTimeout)
	victimAddr := waitRegistered(t, engine, victimID).GetEndpoint()
	replicaAddr := waitRegistered(t, engine, replicaID).GetEndpoint()

	const run = "run-sigterm-grpc"
	requests := make(map[string]*dispatcherpb.ExecutionRequest, sigtermTasks)
	amounts := make(map[string]float64, sigtermTasks)
	for i := range sigtermTasks {
		node := fmt.Sprintf("pay%05d", i)
		key := run + ":" + node + ":1"
		amounts[key] = paymentAmount(i)
		requests[key] = &dispatcherpb.ExecutionRequest{
			RunId: run, NodeId: node, Attempt: 1, Token: "token-" + node, IdempotencyKey: key,
			Variables: map[string]string{"totalAmount": strconv.FormatFloat(amounts[key], 'f', -1, 64), "customerId": "C-" + node},
		}
		outcome.Submitted(key)
	}
	pushAll(t, engine, victimAddr, victimID, run, requests)
	inFlight := waitInFlight(t, victim, sigtermTasks, func() int { return len(engine.Results()) })

	answeredBeforeSignal := len(engine.Results())
	signalled, took := stopWithin(t, victim)

	// Every task the victim held has its one answer now: drained, or
	// handed back as a retryable SHUTDOWN.
	drained, handedBack := 0, map[string]*dispatcherpb.ExecutionRequest{}
	byVictim := map[string]int{}
	for _, res := range engine.Results() {
		key := resultKey(res)
		byVictim[key]++
		switch {
		case res.GetStatus() == gamelanv1.TaskStatus_TASK_STATUS_COMPLETED:
			drained++
			outcome.Answer(key)
			checkPayment(t, key, amounts[key], res)
		case isShutdown(res):
			handedBack[key] = requests[key]
		default:
			t.Errorf("%s: answered %v %v by the stopping executor, neither drained nor handed back", key, res.GetStatus(), res.GetError())
			outcome.Answer(key)
		}
	}
	for key := range requests {
		assert.Equal(t, 1, byVictim[key], "%s: one answer from the stopping executor before it exited", key)
	}
	assert.Positive(t, drained, "the drain answered tasks")
	assert.NotEmpty(t, handedBack, "the drain deadline left tasks to hand back")

	// The engine runs the handed-back tasks elsewhere: the replica.
	before := len(engine.Results())
	pushAll(t, engine, replicaAddr, replicaID, run, handedBack)
	require.Eventually(t, func() bool { return len(engine.Results()) >= before+len(handedBack) }, answerTimeout, 20*time.Millisecond,
		"the replica answers the %d handed-back tasks", len(handedBack))
	answeredAt := time.Now()
	for _, res := range engine.Results()[before:] {
		key := resultKey(res)
		outcome.Answer(key)
		checkPayment(t, key, amounts[key], res)
	}
	outcome.Recovery = answeredAt.Sub(victim.ExitedAt())
	outcome.Notes["inFlightAtSignal"] = inFlight
	outcome.Notes["answeredBeforeSignal"] = answeredBeforeSignal
	outcome.Notes["drained"] = drained - answeredBeforeSignal
	outcome.Notes["handedBack"] = len(handedBack)
	outcome.Notes["exitMs"] = ms(took)
	outcome.Notes["deadlineMs"] = ms(sigtermDrain + sigtermFlush)
	outcome.Notes["allAnsweredMs"] = ms(answeredAt.Sub(signalled))
	outcome.Check(t)
	assert.Contains(t, engine.Unregistered(), victimID, "the stopped executor unregistered")
}

// pushAll pushes every request to the executor at addr (its signature
// naming executorID) from a few goroutines, as an engine under load does,
// retrying a refused push; every push must be accepted within the answer
// timeout.
func pushAll(t *testing.T, engine *grpctest.Engine, addr, executorID, run string, requests map[string]*dispatcherpb.ExecutionRequest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), answerTimeout)
	defer cancel()
	keys := make(chan string, len(requests))
	for key := range requests {
		keys <- key
	}
	close(keys)
	errs := make(chan error, len(requests))
	var pushers sync.WaitGroup
	for range 8 {
		pushers.Go(func() {
			for key := range keys {
				req := proto.CloneOf(requests[key])
				req.Signature = grpctest.Signature(run, executorID)
				errs <- pushUntilAccepted(ctx, engine, addr, req)
			}
		})
	}
	pushers.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// pushUntilAccepted pushes req until the executor accepts it, retrying
// after a short pause (an engine's retry backoff) when it is busy.
func pushUntilAccepted(ctx context.Context, engine *grpctest.Engine, addr string, req *dispatcherpb.ExecutionRequest) error {
	for {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := engine.Push(callCtx, addr, req)
		cancel()
		switch {
		case err == nil && ack.GetAccepted():
			return nil
		case err == nil && ack.GetCode() == 400:
			return fmt.Errorf("push of %s refused as invalid: %s", req.GetIdempotencyKey(), ack.GetMessage())
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("push of %s never accepted (last: %v %v): %w", req.GetIdempotencyKey(), ack, err, ctx.Err())
		}
	}
}

// isShutdown reports whether res is the retryable FAILED SHUTDOWN with
// which a stopping executor hands a task back.
func isShutdown(res *gamelanv1.TaskResult) bool {
	if res.GetStatus() != gamelanv1.TaskStatus_TASK_STATUS_FAILED || res.GetError().GetCode() != "SHUTDOWN" {
		return false
	}
	retryable, _ := res.GetError().GetContext().AsMap()["retryable"].(bool)
	return retryable
}

// checkPayment asserts that res completed the payment of amount.
func checkPayment(t *testing.T, key string, amount float64, res *gamelanv1.TaskResult) {
	t.Helper()
	out := res.GetOutput().AsMap()
	transaction, _ := out["transactionId"].(string)
	if !assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%s: %v", key, res.GetError()) {
		return
	}
	assert.Equal(t, amount, out["amount"], "%s: amount", key)
	assert.True(t, strings.HasPrefix(transaction, "TXN-"), "%s: transaction %v", key, out)
	assert.Equal(t, "token-"+res.GetNodeId(), res.GetExecutionToken(), "%s: token", key)
}

// TestExecutorSIGTERMKafka stops an executor process holding sigtermTasks
// tasks read from Kafka (kafkatest's broker, in the test). A Kafka task
// can be handed back: the executor leaves the unstarted ones uncommitted,
// drains the running ones, commits what it answered and leaves the group.
// It proves: every task held is either answered before the process exits
// or handed back (the answers and the count the executor logs add up to
// every task), the process exits 0 within its deadline, and the same
// service restarted reads the handed-back records again and answers them
// all, zero lost.
func TestExecutorSIGTERMKafka(t *testing.T) {
	t.Parallel()
	outcome := &testkit.Outcome{Scenario: "executor SIGTERM with tasks in flight, kafka", Notes: map[string]any{}}
	broker := kafkatest.Start(t, kafkatest.WithPartitions(4))
	start := func(instance string, delay time.Duration) *testkit.Service {
		env := sigtermEnv(instance, delay)
		env["GAMELAN_EXECUTOR_REGISTRAR"] = "kafka"
		env["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
		env["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "payment-processor=kafka"
		s := startExecutor(t, instance, env)
		s.WaitReady(t, startTimeout)
		return s
	}
	victim := start("victim", sigtermDelay)

	ctx, cancel := context.WithTimeout(t.Context(), answerTimeout)
	defer cancel()
	results := broker.Results(t)
	producer := broker.BulkProducer(t)
	amounts := make(map[string]float64, sigtermTasks)
	for i := range sigtermTasks {
		node := fmt.Sprintf("pay%05d", i)
		msg := kafka.TaskMessage{
			RunID: fmt.Sprintf("run-sigterm-kafka-%02d", i%16), NodeID: node, Attempt: 1, Token: "token-" + node,
			Context:        map[string]any{"totalAmount": paymentAmount(i), "customerId": "C-" + node},
			TargetExecutor: "executor-payment-processor",
		}
		key := kafkatest.TaskKey(msg)
		amounts[key] = paymentAmount(i)
		outcome.Submitted(key)
		producer.Produce(ctx, msg)
	}
	require.NoError(t, producer.Flush(ctx))
	require.Equal(t, sigtermTasks, producer.Acknowledged(), "tasks acknowledged by the broker")
	inFlight := waitInFlight(t, victim, sigtermTasks, results.Unique)

	answeredBeforeSignal := results.Unique()
	signalled, took := stopWithin(t, victim)
	require.NoError(t, results.CatchUp(ctx))
	answeredByVictim := results.Unique()
	handedBack := 0
	if lines := victim.Lines("handed back unstarted tasks to their source"); len(lines) > 0 {
		n, _ := lines[0]["tasks"].(float64)
		handedBack = int(n)
	}
	for _, res := range results.All() {
		if res.Status != "COMPLETED" {
			t.Errorf("%s: answered %s %v by the stopping executor, neither drained nor handed back", kafkatest.ResultKey(res), res.Status, res.Error)
		}
	}
	assert.Equal(t, sigtermTasks, answeredByVictim+handedBack,
		"every task held is answered (%d) or handed back (%d)", answeredByVictim, handedBack)
	assert.Positive(t, answeredByVictim, "the drain answered tasks")
	assert.Positive(t, handedBack, "unstarted tasks were handed back")
	lag, err := broker.Lag("executor", kafkatest.TasksTopic)
	require.NoError(t, err)

	// The service restarted reads the handed-back records again.
	restarted := start("restarted", 10*time.Millisecond)
	require.NoError(t, results.WaitForUnique(ctx, sigtermTasks), "every task answered after the restart")
	answeredAt := time.Now()
	require.NoError(t, broker.WaitForLag(ctx, "executor", kafkatest.TasksTopic, 0), "every record committed")
	require.NoError(t, results.CatchUp(ctx))
	for _, res := range results.All() {
		key := kafkatest.ResultKey(res)
		outcome.Answer(key)
		assert.Equal(t, "COMPLETED", res.Status, "%s: %v", key, res.Error)
		assert.Equal(t, amounts[key], res.Output["amount"], "%s: amount", key)
		assert.Equal(t, "token-"+res.NodeID, res.ExecutionToken, "%s: token", key)
	}
	outcome.Recovery = answeredAt.Sub(victim.ExitedAt())
	outcome.Notes["inFlightAtSignal"] = inFlight
	outcome.Notes["answeredBeforeSignal"] = answeredBeforeSignal
	outcome.Notes["drained"] = answeredByVictim - answeredBeforeSignal
	outcome.Notes["handedBack"] = handedBack
	outcome.Notes["uncommittedAtExit"] = lag
	outcome.Notes["exitMs"] = ms(took)
	outcome.Notes["deadlineMs"] = ms(sigtermDrain + sigtermFlush)
	outcome.Notes["allAnsweredMs"] = ms(answeredAt.Sub(signalled))
	outcome.Check(t)

	restarted.Signal(t, syscall.SIGTERM)
	require.NoError(t, restarted.Wait(t, stopTimeout), "the restarted executor exits 0")
}
