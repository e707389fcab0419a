package component

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// loadTasks is the number of tasks each intake mode must carry (issue 3,
// "Done when").
const loadTasks = 10_000

// loadPushers is how many goroutines push at once in push mode.
const loadPushers = 32

// TestGRPCLoadThroughEachIntake runs 10,000 calculate-tax tasks through
// each gRPC intake mode of the real service against a test engine on
// 127.0.0.1, and checks that the engine ends up with exactly 10,000 unique
// results, each COMPLETED with the tax of its own amount. Duplicates (which
// the engine deduplicates, as Gamelan does) are reported, not failed: bidi
// sends every result both on the stream and through ReportResults.
func TestGRPCLoadThroughEachIntake(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	modes := []struct {
		intake string
		// queueSize is kept at the pusher count in push mode so that the
		// executor refuses with 503 now and then, and the retry is exercised.
		poolSize, queueSize string
		feed                func(t *testing.T, engine *grpctest.Engine, endpoint string, amounts []string) (refusals int64)
	}{
		{intake: "push", poolSize: "16", queueSize: "16", feed: pushAll},
		{intake: "stream", poolSize: "16", queueSize: "64", feed: enqueueAll},
		{intake: "bidi", poolSize: "16", queueSize: "64", feed: enqueueAll},
	}
	for _, mode := range modes {
		t.Run(mode.intake, func(t *testing.T) {
			engine := grpctest.NewEngine()
			addr := engine.Start(t)
			vars := serviceEnv(addr, mode.intake)
			vars["GAMELAN_EXECUTOR_THREAD_POOL_SIZE"] = mode.poolSize
			vars["GAMELAN_EXECUTOR_QUEUE_SIZE"] = mode.queueSize
			r := startService(t, vars)
			reg := waitForRegistration(t, engine, taxExecutorID)

			amounts := make([]string, loadTasks)
			for i := range amounts {
				amounts[i] = taxAmount(i)
			}
			began := time.Now()
			refusals := mode.feed(t, engine, reg.GetEndpoint(), amounts)
			waitForUniqueResults(t, engine, loadTasks, 2*time.Minute)
			elapsed := time.Since(began)

			unique := engine.UniqueResults()
			require.Len(t, unique, loadTasks, "unique results after dedupe")
			failures := 0
			for i, amount := range amounts {
				node := fmt.Sprintf("n%05d", i)
				if !checkTaxResult(t, unique[resultKey(loadRun, node)], loadRun, node, amount) {
					failures++
					if failures >= 5 {
						t.Fatal("too many wrong results")
					}
				}
			}
			duplicates := engine.DuplicateResults()
			assert.Equal(t, loadTasks+duplicates, len(engine.Results()), "every result received is unique or counted as a duplicate")
			t.Logf("%s: %d tasks in %s (%.0f tasks/s), %d duplicate results, %d refusals (503) retried",
				mode.intake, loadTasks, elapsed.Round(time.Millisecond), float64(loadTasks)/elapsed.Seconds(), duplicates, refusals)

			require.NoError(t, r.stop(t))
			assert.Contains(t, engine.Unregistered(), taxExecutorID)
		})
	}
}

// loadRun is the run id of the load tasks; node ids are n00000 to n09999.
const loadRun = "run-load"

// pushAll pushes every task from loadPushers goroutines, each retrying a
// task refused with 503 until it is accepted, after waiting (bounded) for
// the executor to make progress. Any other refusal fails the test. It
// returns how many refusals were retried.
func pushAll(t *testing.T, engine *grpctest.Engine, endpoint string, amounts []string) int64 {
	t.Helper()
	ctx := deadline(t, 2*time.Minute)
	var next, accepted, refused atomic.Int64
	// capacity is what the executor admits at once (THREAD_POOL_SIZE +
	// QUEUE_SIZE of push mode): once the engine holds accepted-capacity+1
	// results, at least one admitted task has left the executor.
	const capacity = 32
	errs := make(chan error, loadPushers)
	var pushers sync.WaitGroup
	for range loadPushers {
		pushers.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(amounts) {
					return
				}
				req := taxPush(loadRun, fmt.Sprintf("n%05d", i), amounts[i])
				for {
					ack, err := engine.Push(ctx, endpoint, req)
					if err != nil {
						errs <- err
						return
					}
					if ack.GetAccepted() {
						accepted.Add(1)
						break
					}
					if ack.GetCode() != 503 {
						errs <- fmt.Errorf("push %s refused: %d %s", req.GetNodeId(), ack.GetCode(), ack.GetMessage())
						return
					}
					refused.Add(1)
					waitCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					_ = engine.WaitForResults(waitCtx, int(accepted.Load())-capacity+1)
					cancel()
					if ctx.Err() != nil {
						errs <- fmt.Errorf("push %s: %w", req.GetNodeId(), context.Cause(ctx))
						return
					}
				}
			}
		})
	}
	pushers.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, len(amounts), accepted.Load(), "every task accepted exactly once")
	return refused.Load()
}

// enqueueAll queues every task for the executor's StreamTasks or
// ExecuteStream streams.
func enqueueAll(t *testing.T, engine *grpctest.Engine, _ string, amounts []string) int64 {
	t.Helper()
	tasks := make([]*gamelanv1.ExecutionTask, len(amounts))
	for i, amount := range amounts {
		tasks[i] = taxTask(t, loadRun, fmt.Sprintf("n%05d", i), amount)
	}
	engine.Enqueue(taxExecutorID, tasks...)
	return 0
}
