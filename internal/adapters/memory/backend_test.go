package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

const waitTimeout = 5 * time.Second

func newTask(node string) domain.Task {
	return domain.Task{
		TaskID:  "task-" + node,
		RunID:   "run-1",
		NodeID:  node,
		Attempt: 1,
		Context: map[string]any{"nested": map[string]any{"value": "original"}, "list": []any{"original"}},
	}
}

func result(node string, status domain.Status) domain.Result {
	return domain.Result{RunID: "run-1", NodeID: node, Attempt: 1, Status: status, Output: map[string]any{"nested": map[string]any{"value": "original"}}}
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startSource starts a memory source of engine with a porttest.Intake and
// stops it when the test ends.
func startSource(t *testing.T, engine *memory.Backend, capacity int) (*memory.TaskSource, *porttest.Intake) {
	t.Helper()
	src := engine.TaskSource()
	in := porttest.NewIntake(capacity)
	require.NoError(t, src.Start(t.Context(), in))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		assert.NoError(t, src.Stop(ctx))
	})
	return src, in
}

func waitOffers(t *testing.T, in *porttest.Intake, n int) []*porttest.Offered {
	t.Helper()
	require.NoError(t, in.WaitUntil(waitCtx(t), func() bool { return len(in.Offers()) >= n }), "waiting for %d offers: %s", n, in)
	return in.Offers()
}

func TestSubmitAndOfferCopyTheTask(t *testing.T) {
	engine := memory.NewBackend()
	task := newTask("a")
	engine.Submit(task)
	task.Context["nested"].(map[string]any)["value"] = "changed by the test"
	task.Context["list"].([]any)[0] = "changed by the test"
	require.Equal(t, "original", engine.Pending()[0].Context["nested"].(map[string]any)["value"])
	require.Equal(t, "original", engine.Pending()[0].Context["list"].([]any)[0])

	_, in := startSource(t, engine, 1)
	offered := waitOffers(t, in, 1)[0]
	offered.Task.Context["nested"].(map[string]any)["value"] = "changed by the runtime"
	offered.Settle(domain.ErrHandedBack)
	again := waitOffers(t, in, 2)[1]
	require.Equal(t, "original", again.Task.Context["nested"].(map[string]any)["value"], "a redelivered task is the engine's copy")
}

func TestDeliverCopiesResults(t *testing.T) {
	engine := memory.NewBackend()
	res := result("a", domain.StatusFailed)
	res.Error = &domain.ErrorInfo{Code: "X", Context: map[string]any{"k": "original"}}
	batch := []domain.Result{res}
	require.NoError(t, engine.ResultSink().Deliver(context.Background(), batch))

	batch[0].Status = domain.StatusCompleted
	batch[0].Output["nested"].(map[string]any)["value"] = "changed"
	batch[0].Error.Code = "CHANGED"
	batch[0].Error.Context["k"] = "changed"

	got := engine.Results()[0]
	assert.Equal(t, domain.StatusFailed, got.Status)
	assert.Equal(t, "original", got.Output["nested"].(map[string]any)["value"])
	assert.Equal(t, "X", got.Error.Code)
	assert.Equal(t, "original", got.Error.Context["k"])

	got.Output["nested"].(map[string]any)["value"] = "changed through a getter"
	assert.Equal(t, "original", engine.UniqueResults()["run-1:a:1"].Output["nested"].(map[string]any)["value"])
}

func TestUniqueResultsKeepTheFirstPerKey(t *testing.T) {
	engine := memory.NewBackend()
	sink := engine.ResultSink()
	ctx := context.Background()
	require.NoError(t, sink.Deliver(ctx, []domain.Result{result("a", domain.StatusCompleted), result("b", domain.StatusCompleted)}))
	require.NoError(t, sink.Deliver(ctx, []domain.Result{result("a", domain.StatusFailed)}))
	retry := result("a", domain.StatusFailed)
	retry.Attempt = 2
	require.NoError(t, sink.Deliver(ctx, []domain.Result{retry}))

	results := engine.Results()
	require.Len(t, results, 4, "every delivery, duplicates included")
	assert.Equal(t, []string{"run-1:a:1", "run-1:b:1", "run-1:a:1", "run-1:a:2"},
		[]string{results[0].Key(), results[1].Key(), results[2].Key(), results[3].Key()})
	unique := engine.UniqueResults()
	require.Len(t, unique, 3)
	assert.Equal(t, domain.StatusCompleted, unique[domain.IdempotencyKey("run-1", "a", 1)].Status, "the first result per key wins")
	assert.Equal(t, domain.StatusFailed, unique[domain.IdempotencyKey("run-1", "a", 2)].Status)
}

func TestWaitForResults(t *testing.T) {
	engine := memory.NewBackend()
	sink := engine.ResultSink()

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := engine.WaitForResults(short, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "0 arrived")

	done := make(chan error, 1)
	go func() { done <- engine.WaitForResults(waitCtx(t), 2) }()
	require.NoError(t, sink.Deliver(context.Background(), []domain.Result{result("a", domain.StatusCompleted)}))
	require.NoError(t, sink.Deliver(context.Background(), []domain.Result{result("a", domain.StatusCompleted)}))
	select {
	case err := <-done:
		t.Fatalf("WaitForResults(2) returned %v after one unique result and a duplicate", err)
	default:
	}
	require.NoError(t, sink.Deliver(context.Background(), []domain.Result{result("b", domain.StatusCompleted)}))
	require.NoError(t, <-done)
	require.NoError(t, engine.WaitForResults(context.Background(), 2), "already there")
}

func TestFailDeliveries(t *testing.T) {
	engine := memory.NewBackend()
	sink := engine.ResultSink()
	ctx := context.Background()
	engine.FailDeliveries(2)
	for range 2 {
		err := sink.Deliver(ctx, []domain.Result{result("a", domain.StatusCompleted)})
		require.ErrorIs(t, err, memory.ErrInjected)
	}
	require.Empty(t, engine.Results(), "a failed delivery records nothing")
	require.NoError(t, sink.Deliver(ctx, []domain.Result{result("a", domain.StatusCompleted)}))
	require.Len(t, engine.Results(), 1)

	engine.FailDeliveries(100)
	engine.FailDeliveries(0)
	require.NoError(t, sink.Deliver(ctx, nil), "FailDeliveries sets the count, so 0 ends the outage")
}

func TestFailRegistrationsAndHeartbeats(t *testing.T) {
	engine := memory.NewBackend()
	ctx := context.Background()
	reg := domain.Registration{ExecutorID: "exec-1", Descriptor: domain.Descriptor{Type: "t"}}

	engine.FailRegistrations(1)
	require.ErrorIs(t, engine.Registrar().Register(ctx, reg), memory.ErrInjected)
	_, ok := engine.Registration("exec-1")
	require.False(t, ok, "a failed registration records nothing")
	require.NoError(t, engine.Registrar().Register(ctx, reg))

	engine.FailHeartbeats(1)
	err := engine.Heartbeater().Heartbeat(ctx, domain.Heartbeat{ExecutorID: "exec-1"})
	require.ErrorIs(t, err, memory.ErrInjected)
	require.NotErrorIs(t, err, domain.ErrNotRegistered, "an unreachable engine is not a forgetful one")
	require.Empty(t, engine.Heartbeats("exec-1"))
	require.NoError(t, engine.Heartbeater().Heartbeat(ctx, domain.Heartbeat{ExecutorID: "exec-1", CurrentTasks: 2}))
	require.Equal(t, []domain.Heartbeat{{ExecutorID: "exec-1", CurrentTasks: 2}}, engine.Heartbeats("exec-1"))
}

func TestRegistryForgetAndUnregister(t *testing.T) {
	engine := memory.NewBackend()
	ctx := context.Background()
	registrar, heartbeater := engine.Registrar(), engine.Heartbeater()
	for _, id := range []string{"exec-b", "exec-a"} {
		require.NoError(t, registrar.Register(ctx, domain.Registration{ExecutorID: id, Metadata: map[string]string{"host": "h"}}))
	}
	regs := engine.Registrations()
	require.Len(t, regs, 2)
	assert.Equal(t, "exec-a", regs[0].ExecutorID, "ordered by executor id")
	regs[0].Metadata["host"] = "changed"
	got, _ := engine.Registration("exec-a")
	assert.Equal(t, "h", got.Metadata["host"], "getters return copies")

	engine.Forget("exec-a")
	err := heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: "exec-a"})
	require.ErrorIs(t, err, domain.ErrNotRegistered)
	require.NoError(t, registrar.Register(ctx, domain.Registration{ExecutorID: "exec-a"}))
	require.NoError(t, heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: "exec-a"}))
	assert.Empty(t, engine.Unregistered(), "Forget is not an unregistration")

	require.NoError(t, registrar.Unregister(ctx, "exec-b"))
	require.NoError(t, registrar.Unregister(ctx, "exec-unknown"))
	require.NoError(t, registrar.Unregister(ctx, "exec-a"))
	assert.Equal(t, []string{"exec-b", "exec-unknown", "exec-a"}, engine.Unregistered())
	assert.Empty(t, engine.Registrations())
	require.ErrorIs(t, heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: "exec-b"}), domain.ErrNotRegistered)

	require.Error(t, registrar.Register(ctx, domain.Registration{}), "an empty executor id")
}

func TestRejectedTasksAreDropped(t *testing.T) {
	engine := memory.NewBackend()
	invalid := newTask("bad")
	invalid.RunID = "" // porttest.Intake validates like the runtime
	engine.Submit(invalid)
	engine.Submit(newTask("good"))
	_, in := startSource(t, engine, 4)

	waitOffers(t, in, 1)
	require.NoError(t, engine.WaitUntil(waitCtx(t), func() bool { return len(engine.Rejected()) == 1 }))
	assert.Equal(t, "bad", engine.Rejected()[0].NodeID)
	assert.Empty(t, engine.Pending())
	require.Len(t, in.Refusals(), 1)
	require.ErrorIs(t, in.Refusals()[0].Err, domain.ErrInvalidTask)
}

func TestHandedBackTaskIsOfferedFirst(t *testing.T) {
	engine := memory.NewBackend()
	engine.Submit(newTask("a"))
	engine.Submit(newTask("b"))
	_, in := startSource(t, engine, 1)

	first := waitOffers(t, in, 1)[0]
	require.Equal(t, "a", first.Task.NodeID)
	assert.True(t, first.Redeliverable)
	assert.Equal(t, []string{"a"}, nodeIDs(engine.Unsettled()))
	assert.Equal(t, []string{"b"}, nodeIDs(engine.Pending()))

	first.Settle(domain.ErrHandedBack)
	second := waitOffers(t, in, 2)[1]
	require.Equal(t, "a", second.Task.NodeID, "a handed-back task goes to the front of the queue")
	second.Settle(nil)
	third := waitOffers(t, in, 3)[2]
	require.Equal(t, "b", third.Task.NodeID)
	third.Settle(nil)

	require.NoError(t, engine.WaitUntil(waitCtx(t), func() bool { return len(engine.Acknowledged()) == 2 }))
	assert.Equal(t, []string{"a", "b"}, nodeIDs(engine.Acknowledged()))
	assert.Empty(t, engine.Unsettled())
	assert.Empty(t, engine.Violations())
}

func TestDeadLetteredTaskIsDoneNotRequeued(t *testing.T) {
	engine := memory.NewBackend()
	engine.Submit(newTask("a"))
	_, in := startSource(t, engine, 1)

	first := waitOffers(t, in, 1)[0]
	first.Settle(fmt.Errorf("result refused for good: %w", domain.ErrUndeliverable))

	require.NoError(t, engine.WaitUntil(waitCtx(t), func() bool { return len(engine.Acknowledged()) == 1 }))
	assert.Empty(t, engine.Pending(), "a dead-lettered task is not delivered again")
	assert.Empty(t, engine.Unsettled())
	assert.Len(t, in.Offers(), 1)
}

func TestUnexpectedOfferErrorIsRetried(t *testing.T) {
	engine := memory.NewBackend()
	_, in := startSource(t, engine, 2)
	in.RefuseNext(errors.New("runtime hiccup"))
	engine.Submit(newTask("a"))

	offered := waitOffers(t, in, 1)[0]
	assert.Equal(t, "a", offered.Task.NodeID)
	assert.Len(t, in.Refusals(), 1)
}

func TestCancelForwardsToTheRuntime(t *testing.T) {
	engine := memory.NewBackend()
	require.False(t, engine.Cancel("task-a", "no source started"))

	engine.Submit(newTask("a"))
	engine.Submit(newTask("b"))
	_, in := startSource(t, engine, 1)
	waitOffers(t, in, 1)

	assert.True(t, engine.Cancel("task-a", "user aborted"), "an offered task is found")
	assert.False(t, engine.Cancel("task-b", "still queued"), "a queued task is not the runtime's yet")
	assert.Equal(t, []string{"b"}, nodeIDs(engine.Pending()), "Cancel does not withdraw queued tasks")
	assert.Equal(t, []porttest.CancelCall{
		{TaskID: "task-a", Reason: "user aborted", Found: true},
		{TaskID: "task-b", Reason: "still queued", Found: false},
	}, in.Cancels())
}

func TestCompetingSourcesShareTheQueue(t *testing.T) {
	engine := memory.NewBackend()
	_, in1 := startSource(t, engine, 5) // full after 5 unsettled tasks: the second source gets the rest
	_, in2 := startSource(t, engine, 100)
	const n = 50
	for i := range n {
		engine.Submit(newTask(string(rune('A'+i%26)) + string(rune('a'+i/26))))
	}
	// The offers are the intakes' events, not the engine's: poll them.
	require.Eventually(t, func() bool { return len(in1.Offers())+len(in2.Offers()) == n }, waitTimeout, time.Millisecond,
		"%s; %s", in1, in2)
	seen := map[string]int{}
	for _, o := range append(in1.Offers(), in2.Offers()...) {
		seen[o.Task.NodeID]++
	}
	assert.Len(t, seen, n, "each task offered to exactly one source")
	assert.LessOrEqual(t, len(in1.Offers()), 5)
	assert.True(t, engine.Cancel(in2.Offers()[0].Task.TaskID, "reaches the second source"),
		"Cancel asks each started source's intake until one finds the task")
}

func TestDrainingStopsTheSource(t *testing.T) {
	engine := memory.NewBackend()
	src, in := startSource(t, engine, 2)
	engine.Submit(newTask("a"))
	waitOffers(t, in, 1)
	// The runtime starts to drain while the source offers b: b's Offer is
	// held until the drain has begun, so that it is refused (a source that
	// asks for room after the drain gets ErrDraining before taking a task,
	// and there would be no refusal to see).
	entered, release := in.BlockNextOffer()
	engine.Submit(newTask("b"))
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatalf("the source never offered b: %s", in)
	}
	in.Drain()
	release()

	require.NoError(t, engine.WaitUntil(waitCtx(t), func() bool {
		return len(in.Refusals()) == 1 && len(engine.Pending()) == 1
	}), "waiting for the refused task to return to the queue: %s", in)
	require.ErrorIs(t, in.Refusals()[0].Err, domain.ErrDraining)
	assert.Equal(t, []string{"b"}, nodeIDs(engine.Pending()), "the refused task stays in the engine")
	require.NoError(t, src.Healthy(), "a draining runtime does not make the source unhealthy")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, src.Stop(ctx))
}

func TestSourceLifecycle(t *testing.T) {
	engine := memory.NewBackend()
	src := engine.TaskSource()
	require.Error(t, src.Healthy(), "before Start")
	require.Error(t, src.Start(context.Background(), nil), "nil intake")

	in := porttest.NewIntake(1)
	require.NoError(t, src.Start(context.Background(), in))
	require.NoError(t, src.Healthy())
	require.Error(t, src.Start(context.Background(), in), "Start twice")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, src.Stop(ctx))
	require.ErrorIs(t, src.Healthy(), domain.ErrClosed)
	require.ErrorIs(t, src.Start(context.Background(), in), domain.ErrClosed, "Start after Stop")

	never := engine.TaskSource()
	require.NoError(t, never.Stop(ctx))
	require.ErrorIs(t, never.Start(context.Background(), in), domain.ErrClosed)
}

func TestStopWaitsForTheDeliveryLoop(t *testing.T) {
	engine := memory.NewBackend()
	in := &blockingIntake{Intake: porttest.NewIntake(1), entered: make(chan struct{}), release: make(chan struct{})}
	src := engine.TaskSource()
	require.NoError(t, src.Start(context.Background(), in))
	<-in.entered // the loop is inside AwaitCapacity, which ignores ctx until released

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, src.Stop(short), context.DeadlineExceeded, "Stop reports that the loop has not ended yet")

	close(in.release)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, src.Stop(ctx))
	engine.Submit(newTask("a"))
	assert.Zero(t, in.Attempts(), "no Offer after Stop returned")
	assert.Len(t, engine.Pending(), 1)
}

// blockingIntake's first AwaitCapacity blocks until release, ignoring ctx,
// to hold the delivery loop.
type blockingIntake struct {
	*porttest.Intake
	entered, release chan struct{}
	calls            int
}

func (b *blockingIntake) AwaitCapacity(ctx context.Context) (int, error) {
	b.calls++ // only the delivery loop calls it
	if b.calls == 1 {
		close(b.entered)
		<-b.release
	}
	return b.Intake.AwaitCapacity(ctx)
}

// recordingIntake accepts every task and keeps the Delivery, so that a test
// can call Settle as a faulty runtime would.
type recordingIntake struct {
	*porttest.Intake
	deliveries chan ports.Delivery
}

func (r *recordingIntake) Offer(_ context.Context, d ports.Delivery) error {
	r.deliveries <- d
	return nil
}

func TestSettlingTwiceIsAViolation(t *testing.T) {
	engine := memory.NewBackend()
	in := &recordingIntake{Intake: porttest.NewIntake(10), deliveries: make(chan ports.Delivery, 10)}
	src := engine.TaskSource()
	require.NoError(t, src.Start(context.Background(), in))
	t.Cleanup(func() { _ = src.Stop(context.Background()) })
	engine.Submit(newTask("a"))

	d := <-in.deliveries
	d.Settle(nil)
	d.Settle(domain.ErrHandedBack)
	violations := engine.Violations()
	require.Len(t, violations, 1)
	assert.ErrorContains(t, violations[0], "task-a")
	assert.Empty(t, engine.Pending(), "the second Settle had no effect")
	assert.Len(t, engine.Acknowledged(), 1)
}

func TestHistoryLimit(t *testing.T) {
	engine := memory.NewBackend(memory.WithHistoryLimit(3))
	sink := engine.ResultSink()
	for _, node := range []string{"a", "b", "c", "d", "e"} {
		require.NoError(t, sink.Deliver(context.Background(), []domain.Result{result(node, domain.StatusCompleted)}))
	}
	results := engine.Results()
	require.Len(t, results, 3)
	assert.Equal(t, "c", results[0].NodeID, "the oldest are dropped")
	unique := engine.UniqueResults()
	assert.Len(t, unique, 3)
	assert.Contains(t, unique, "run-1:e:1")
	assert.NotContains(t, unique, "run-1:a:1")
	require.NoError(t, engine.WaitForResults(context.Background(), 5), "WaitForResults counts every unique result ever received")
}

func TestCancelledContexts(t *testing.T) {
	engine := memory.NewBackend()
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("shutting down")
	cancel(cause)

	require.ErrorIs(t, engine.ResultSink().Deliver(ctx, []domain.Result{result("a", domain.StatusCompleted)}), cause)
	require.ErrorIs(t, engine.Registrar().Register(ctx, domain.Registration{ExecutorID: "x"}), cause)
	require.ErrorIs(t, engine.Registrar().Unregister(ctx, "x"), cause)
	require.ErrorIs(t, engine.Heartbeater().Heartbeat(ctx, domain.Heartbeat{ExecutorID: "x"}), cause)
	require.ErrorIs(t, engine.TaskSource().Start(ctx, porttest.NewIntake(1)), cause)
	require.Empty(t, engine.Results())
	require.Empty(t, engine.Registrations())
	require.Empty(t, engine.Unregistered())
}

func nodeIDs(tasks []domain.Task) []string {
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.NodeID
	}
	return ids
}

// TestCloseTakesBackWhatIsUnsettled: Settle is honoured until Close. A task
// settled after Stop is acknowledged; Close puts the tasks still unsettled
// back at the front of the queue, in offer order, and their Settle is then
// ignored (not honoured, and not a violation: the port allows it).
func TestCloseTakesBackWhatIsUnsettled(t *testing.T) {
	engine := memory.NewBackend()
	src, in := startSource(t, engine, 3)
	for _, node := range []string{"a", "b", "c", "d"} {
		engine.Submit(newTask(node))
	}
	offers := waitOffers(t, in, 3) // d waits: no room
	require.NoError(t, src.Stop(waitCtx(t)))
	require.True(t, offers[0].Settle(nil), "settle a after Stop")

	require.NoError(t, src.Close(waitCtx(t)))
	require.NoError(t, src.Close(waitCtx(t)), "Close again")
	var pending []string
	for _, task := range engine.Pending() {
		pending = append(pending, task.NodeID)
	}
	require.Equal(t, []string{"b", "c", "d"}, pending, "unsettled tasks back first, in offer order")
	assert.Empty(t, engine.Unsettled())

	require.True(t, offers[1].Settle(nil), "settle b after Close")
	require.True(t, offers[2].Settle(domain.ErrHandedBack), "hand c back after Close")
	assert.Empty(t, engine.Violations())
	require.Len(t, engine.Acknowledged(), 1, "only the Settle before Close was honoured")
	assert.Equal(t, "a", engine.Acknowledged()[0].NodeID)
	assert.Len(t, engine.Pending(), 3, "the late hand-back did not queue c twice")
}
