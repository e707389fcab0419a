package devengine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// recordingDeliverer records deliveries and can refuse them.
type recordingDeliverer struct {
	mu        sync.Mutex
	delivered map[string][]string // executor id -> task ids
	refuse    int
}

func (d *recordingDeliverer) Deliver(_ context.Context, to Executor, task domain.Task) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.refuse > 0 {
		d.refuse--
		return "", errors.New("503 full")
	}
	if d.delivered == nil {
		d.delivered = map[string][]string{}
	}
	d.delivered[to.ID] = append(d.delivered[to.ID], task.TaskID)
	return "fake", nil
}

func (d *recordingDeliverer) count(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.delivered[id])
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func startEngine(t *testing.T, clock *fakeClock) (*Engine, *recordingDeliverer) {
	t.Helper()
	cfg := Config{HeartbeatExpiry: 30 * time.Second, RetryDelay: time.Millisecond}
	if clock != nil {
		cfg.Now = clock.Now
	}
	e := New(cfg)
	d := &recordingDeliverer{}
	e.SetDeliverer("GRPC", d)
	runEngine(t, e)
	return e, d
}

// runEngine runs e until the test ends.
func runEngine(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, e *Engine, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.WaitUntil(ctx, cond), what)
}

func answer(e *Engine, taskID string, status domain.Status) bool {
	t, _ := e.Task(taskID)
	return e.Result(resultOf(t, status))
}

func resultOf(t Task, status domain.Status) domain.Result {
	return domain.Result{RunID: t.RunID, NodeID: t.NodeID, Attempt: t.Attempt, ExecutionToken: t.ExecutionToken,
		Status: status, ExecutorID: t.ExecutorID}
}

func submit(t *testing.T, e *Engine, spec TaskSpec) Task {
	t.Helper()
	task, err := e.Submit(spec)
	require.NoError(t, err)
	return task
}

func TestDispatchIsLeastLoadedAndNeverAboveMaxConcurrent(t *testing.T) {
	e, d := startEngine(t, nil)
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 2})
	e.Register(Executor{ID: "b", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})
	var ids []string
	for range 10 {
		task, err := e.Submit(TaskSpec{ExecutorType: "tax"})
		require.NoError(t, err)
		ids = append(ids, task.ID)
	}
	waitFor(t, e, "6 tasks delivered", func() bool { return d.count("a")+d.count("b") == 6 })
	assert.Equal(t, 2, d.count("a"), "a got more than its max concurrent")
	assert.Equal(t, 4, d.count("b"), "b got more than its max concurrent")

	// Answering frees room: the rest go out, never above the maxima.
	for _, id := range ids[:6] {
		task, _ := e.Task(id)
		require.True(t, answer(e, id, domain.StatusCompleted), "result of %s", task.ID)
	}
	waitFor(t, e, "all delivered", func() bool { return d.count("a")+d.count("b") == 10 })
	for _, ex := range e.Executors() {
		assert.LessOrEqual(t, ex.Assigned, ex.MaxConcurrent)
	}
}

func TestRefusedDeliveryIsRetried(t *testing.T) {
	e, d := startEngine(t, nil)
	d.refuse = 3
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 1})
	task, err := e.Submit(TaskSpec{ExecutorType: "tax"})
	require.NoError(t, err)
	waitFor(t, e, "delivered after refusals", func() bool { return d.count("a") == 1 })
	got, _ := e.Task(task.ID)
	assert.Equal(t, 4, got.Deliveries)
	assert.Equal(t, StateAssigned, got.State)
}

func TestSilentExecutorsTasksAreReassigned(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	e, d := startEngine(t, clock)
	e.Register(Executor{ID: "dying", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 5})
	task, err := e.Submit(TaskSpec{ExecutorType: "tax"})
	require.NoError(t, err)
	waitFor(t, e, "delivered to the first", func() bool { return d.count("dying") == 1 })

	e.Register(Executor{ID: "healthy", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 5})
	clock.advance(31 * time.Second)
	require.NoError(t, e.Heartbeat(domain.Heartbeat{ExecutorID: "healthy"}))
	e.expire()
	waitFor(t, e, "reassigned", func() bool { return d.count("healthy") == 1 })
	ex, _ := e.Executor("dying")
	assert.False(t, ex.Healthy)

	clock.advance(31 * time.Second)
	require.NoError(t, e.Heartbeat(domain.Heartbeat{ExecutorID: "healthy"}))
	e.expire()
	_, known := e.Executor("dying")
	assert.False(t, known, "an executor silent for twice the expiry is removed")
	assert.ErrorIs(t, e.Heartbeat(domain.Heartbeat{ExecutorID: "dying"}), ErrUnknownExecutor)

	// A late result from the dead executor still counts, once.
	require.True(t, answer(e, task.ID, domain.StatusCompleted))
	assert.False(t, answer(e, task.ID, domain.StatusCompleted))
	assert.Equal(t, int64(1), e.Counters().Duplicates)
}

func TestResultsAreDeduplicatedAndUnknownOnesCounted(t *testing.T) {
	e, _ := startEngine(t, nil)
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 1})
	task, err := e.Submit(TaskSpec{ExecutorType: "tax", Context: map[string]any{"amount": 1}})
	require.NoError(t, err)
	waitFor(t, e, "assigned", func() bool { got, _ := e.Task(task.ID); return got.State == StateAssigned })
	assert.True(t, answer(e, task.ID, domain.StatusFailed))
	assert.False(t, answer(e, task.ID, domain.StatusCompleted), "a second result replaced the first")
	got, _ := e.Task(task.ID)
	assert.Equal(t, string(domain.StatusFailed), got.State)
	assert.False(t, e.Result(domain.Result{RunID: "nope", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}))
	assert.Equal(t, int64(1), e.Counters().UnknownResults)
}

func TestCancelAndSubmitValidation(t *testing.T) {
	e, _ := startEngine(t, nil)
	task, err := e.Submit(TaskSpec{ExecutorType: "nobody-serves-this"})
	require.NoError(t, err)
	ok, err := e.Cancel(task.ID, "changed my mind")
	require.NoError(t, err)
	assert.True(t, ok)
	got, _ := e.Task(task.ID)
	assert.Equal(t, string(domain.StatusCancelled), got.State)
	_, err = e.Cancel(task.ID, "again")
	assert.Error(t, err)
	_, err = e.Submit(TaskSpec{})
	assert.Error(t, err, "a task without executor type or node type was accepted")
	for _, seconds := range []int{-1, 365*24*3600 + 1, 18446744074} {
		_, err = e.Submit(TaskSpec{ExecutorType: "tax", TimeoutSeconds: seconds})
		assert.ErrorContains(t, err, "timeoutSeconds must be between 0 and 31536000", "timeoutSeconds %d", seconds)
	}
}

func TestNodeTypeRouting(t *testing.T) {
	e, d := startEngine(t, nil)
	e.Register(Executor{ID: "mail", Type: "notification-sender", CommunicationType: "GRPC", MaxConcurrent: 3, SupportedNodeTypes: []string{"email"}})
	for i := range 3 {
		_, err := e.Submit(TaskSpec{NodeType: "email", NodeID: fmt.Sprint("n", i)})
		require.NoError(t, err)
	}
	waitFor(t, e, "routed by node type", func() bool { return d.count("mail") == 3 })
}

func TestSummary(t *testing.T) {
	now := time.Unix(1000, 0)
	tasks := []Task{
		{State: "COMPLETED", Transport: "grpc-push", SubmittedAt: now, CompletedAt: now.Add(10 * time.Millisecond), LatencyMs: 10},
		{State: "COMPLETED", Transport: "grpc-push", SubmittedAt: now, CompletedAt: now.Add(30 * time.Millisecond), LatencyMs: 30},
		{State: "FAILED", Transport: "kafka", SubmittedAt: now, CompletedAt: now.Add(time.Second), LatencyMs: 1000,
			Result: &Result{Status: domain.StatusFailed, Error: &ResultError{Code: "INVALID_INPUT"}}},
		{State: StatePending},
	}
	s := Summarize(tasks, Counters{Duplicates: 2})
	assert.Equal(t, 4, s.Tasks)
	assert.Equal(t, map[string]int{"COMPLETED": 2, "FAILED": 1, "PENDING": 1}, s.ByState)
	assert.Equal(t, map[string]int{"INVALID_INPUT": 1}, s.FailuresByCode)
	assert.Equal(t, 2, s.ByTransport["grpc-push"].Answered)
	assert.Equal(t, 10.0, s.ByTransport["grpc-push"].P50Ms)
	assert.Equal(t, 30.0, s.ByTransport["grpc-push"].P99Ms)
	assert.InDelta(t, 2/0.03, s.ByTransport["grpc-push"].TasksPerSecond, 0.01)
}

// answeringDeliverer answers each task before its delivery returns, as an
// executor that reports a result before its push ack is read, and holds
// the delivery until release is closed.
type answeringDeliverer struct {
	engine  *Engine
	release chan struct{}
}

func (d *answeringDeliverer) Route(Executor) string { return "grpc-push" }

func (d *answeringDeliverer) Deliver(_ context.Context, _ Executor, task domain.Task) (string, error) {
	d.engine.Result(domain.Result{RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt, ExecutionToken: task.ExecutionToken,
		Status: domain.StatusCompleted})
	<-d.release
	return "grpc-push", nil
}

func TestTransportIsRecordedWhenTheResultOvertakesTheDelivery(t *testing.T) {
	e := New(Config{})
	d := &answeringDeliverer{engine: e, release: make(chan struct{})}
	e.SetDeliverer("GRPC", d)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 1})
	task, err := e.Submit(TaskSpec{ExecutorType: "tax"})
	require.NoError(t, err)

	waitFor(t, e, "answered", func() bool { got, _ := e.Task(task.ID); return got.Final() })
	got, _ := e.Task(task.ID)
	assert.Equal(t, "grpc-push", got.Transport, "while the delivery has not returned")
	assert.Equal(t, 1, Summarize(e.Tasks(), e.Counters()).ByTransport["grpc-push"].Answered)
	close(d.release)
}

// gatedDeliverer hands every delivery to the test, which decides when and
// how it ends, and records cancellations.
type gatedDeliverer struct {
	calls chan gatedDelivery

	mu        sync.Mutex
	cancelled []string
}

type gatedDelivery struct {
	task  domain.Task
	reply chan error
}

func (d *gatedDeliverer) Deliver(ctx context.Context, _ Executor, task domain.Task) (string, error) {
	call := gatedDelivery{task: task, reply: make(chan error, 1)}
	select {
	case d.calls <- call:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	select {
	case err := <-call.reply:
		if err != nil {
			return "", err
		}
		return "gated", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (d *gatedDeliverer) Cancel(_, taskID, _ string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cancelled = append(d.cancelled, taskID)
	return true
}

func (d *gatedDeliverer) cancellations() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.cancelled)
}

func (d *gatedDeliverer) next(t *testing.T) gatedDelivery {
	t.Helper()
	select {
	case call := <-d.calls:
		return call
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
		return gatedDelivery{}
	}
}

func startGatedEngine(t *testing.T, communicationType string) (*Engine, *gatedDeliverer) {
	t.Helper()
	e := New(Config{RetryDelay: time.Millisecond})
	d := &gatedDeliverer{calls: make(chan gatedDelivery, 4)}
	e.SetDeliverer(communicationType, d)
	runEngine(t, e)
	return e, d
}

// TestFailedDeliveryOfAnAnsweredTaskReleasesItsSlotOnce: a push whose ack
// is lost after the executor ran the task and reported its result must not
// free the executor's slot a second time.
func TestFailedDeliveryOfAnAnsweredTaskReleasesItsSlotOnce(t *testing.T) {
	e, d := startGatedEngine(t, "GRPC")
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 1})

	first := submit(t, e, TaskSpec{ExecutorType: "tax"})
	firstDelivery := d.next(t)
	require.True(t, answer(e, first.ID, domain.StatusCompleted), "the result comes before the ack")
	second := submit(t, e, TaskSpec{ExecutorType: "tax"})
	secondDelivery := d.next(t)
	require.Equal(t, second.ID, secondDelivery.task.TaskID)
	secondDelivery.reply <- nil
	firstDelivery.reply <- errors.New("push ack lost: deadline exceeded")
	e.deliveries.Wait() // nothing else is pending, so no delivery starts meanwhile

	ex, _ := e.Executor("a")
	assert.Equal(t, 1, ex.Assigned, "a holds the second task only")
	third := submit(t, e, TaskSpec{ExecutorType: "tax"})
	e.dispatch(t.Context())
	got, _ := e.Task(third.ID)
	assert.Equal(t, StatePending, got.State, "a third task went to a, full with the second")
}

// TestResultsBreakingTheProtocolAreRefused: a result must carry a final
// status and the execution token it was sent (docs/protocol.md, section 3).
func TestResultsBreakingTheProtocolAreRefused(t *testing.T) {
	e, d := startGatedEngine(t, "GRPC")
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})
	task := submit(t, e, TaskSpec{ExecutorType: "tax"})
	d.next(t).reply <- nil
	waitFor(t, e, "delivered", func() bool { got, _ := e.Task(task.ID); return got.Transport == "gated" })
	task, _ = e.Task(task.ID)

	wrongToken := resultOf(task, domain.StatusCompleted)
	wrongToken.ExecutionToken = "not-" + task.ExecutionToken
	noToken := resultOf(task, domain.StatusCompleted)
	noToken.ExecutionToken = ""
	for i, res := range []domain.Result{resultOf(task, "PENDING"), resultOf(task, ""), resultOf(task, "RUNNING"), wrongToken, noToken} {
		assert.False(t, e.Result(res), "status %q, token %q recorded", res.Status, res.ExecutionToken)
		assert.Equal(t, int64(i+1), e.Counters().RefusedResults)
	}
	got, _ := e.Task(task.ID)
	assert.Equal(t, StateAssigned, got.State)
	assert.True(t, e.Result(resultOf(task, domain.StatusSkipped)))
}

// TestDrainingExecutorGetsNoNewTasks: a heartbeat with status DRAINING
// (gRPC here) stops dispatch to the executor; a HEALTHY one resumes it.
func TestDrainingExecutorGetsNoNewTasks(t *testing.T) {
	e, d := startEngine(t, nil)
	g := NewGRPC(e, grpcengine.Config{}, slog.New(slog.DiscardHandler))
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})
	e.Register(Executor{ID: "b", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})
	_, err := g.Server().Heartbeat(t.Context(), &gamelanv1.HeartbeatRequest{ExecutorId: "a", CurrentTaskCount: 1,
		Health: &gamelanv1.ExecutorHealth{Status: domain.HealthDraining}})
	require.NoError(t, err)
	ex, _ := e.Executor("a")
	require.True(t, ex.Draining)

	for range 3 {
		submit(t, e, TaskSpec{ExecutorType: "tax"})
	}
	waitFor(t, e, "three tasks delivered", func() bool { return d.count("b") == 3 })
	assert.Zero(t, d.count("a"), "tasks went to the draining executor")

	require.NoError(t, e.Heartbeat(domain.Heartbeat{ExecutorID: "a", Status: domain.HealthHealthy}))
	submit(t, e, TaskSpec{ExecutorType: "tax"})
	waitFor(t, e, "the next task delivered to a, less loaded", func() bool { return d.count("a") == 1 })
}

// TestCancelOfATaskBeingDeliveredIsRefused: until its delivery returns, a
// cancellation could overtake the task on its stream, so it is refused.
func TestCancelOfATaskBeingDeliveredIsRefused(t *testing.T) {
	e, d := startGatedEngine(t, "GRPC")
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 1})
	task := submit(t, e, TaskSpec{ExecutorType: "tax"})
	delivery := d.next(t)

	_, err := e.Cancel(task.ID, "too early")
	require.Error(t, err)
	assert.Empty(t, d.cancellations())

	delivery.reply <- nil
	waitFor(t, e, "delivered", func() bool { got, _ := e.Task(task.ID); return got.Transport == "gated" })
	cancelled, err := e.Cancel(task.ID, "now")
	require.NoError(t, err)
	assert.True(t, cancelled)
	assert.Equal(t, []string{task.ID}, d.cancellations())
}

// TestFinishedTasksAreEvictedAndNeverScanned: with RetainFinished 3 the
// engine keeps the three tasks that finished last (the task API answers
// 404 for the others, and a late result of one counts as unknown), and
// the periodic work (expiry of a silent executor, the overdue results of
// a closed stream) and the close of a stream visit only the unanswered
// tasks they concern, however many tasks finished before.
func TestFinishedTasksAreEvictedAndNeverScanned(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	e := New(Config{RetainFinished: 3, Now: clock.Now, ResultGrace: time.Second})
	d := &recordingDeliverer{}
	e.SetDeliverer("GRPC", d)
	// No Run loop: the test does the dispatch and the tick's work itself.
	dispatch := func() { e.dispatch(t.Context()); e.deliveries.Wait() }
	tick := func() { e.expire(); e.requeueOverdue() }
	scanned := func(work func()) int {
		e.mu.Lock()
		before := e.scanned
		e.mu.Unlock()
		work()
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.scanned - before
	}
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 100})

	cancelled := submit(t, e, TaskSpec{ExecutorType: "nobody-serves-this"})
	_, err := e.Cancel(cancelled.ID, "not wanted")
	require.NoError(t, err)
	finished := []Task{cancelled}
	var answered []Task
	for range 20 {
		answered = append(answered, submit(t, e, TaskSpec{ExecutorType: "tax"}))
	}
	dispatch()
	require.Equal(t, 20, d.count("a"))
	for _, task := range answered {
		require.True(t, answer(e, task.ID, domain.StatusCompleted))
		finished = append(finished, task)
	}

	var kept []string
	for _, task := range e.Tasks() {
		kept = append(kept, task.ID)
	}
	retained := finished[len(finished)-3:]
	assert.ElementsMatch(t, []string{retained[0].ID, retained[1].ID, retained[2].ID}, kept, "not the last three to finish")
	e.mu.Lock()
	assert.Len(t, e.tasks, 3)
	assert.Len(t, e.byKey, 3)
	e.mu.Unlock()
	api := NewHTTP(e, nil, nil, slog.New(slog.DiscardHandler)).Handler()
	get := func(id string) int {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/tasks/"+id, nil))
		return rec.Code
	}
	assert.Equal(t, http.StatusNotFound, get(cancelled.ID), "the first to finish")
	assert.Equal(t, http.StatusNotFound, get(finished[len(finished)-4].ID), "the last evicted")
	assert.Equal(t, http.StatusOK, get(retained[0].ID))
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/tasks/"+cancelled.ID+"/cancel", nil))
	assert.Equal(t, http.StatusNotFound, rec.Code, "cancel of a forgotten task")
	assert.False(t, e.Result(resultOf(finished[1], domain.StatusCompleted)), "a late result of an evicted task")
	assert.Equal(t, int64(1), e.Counters().UnknownResults)

	// a falls silent holding one task: the tick visits that task only.
	held := submit(t, e, TaskSpec{ExecutorType: "tax"})
	dispatch()
	e.Register(Executor{ID: "b", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 100})
	clock.advance(31 * time.Second)
	require.NoError(t, e.Heartbeat(domain.Heartbeat{ExecutorID: "b"}))
	assert.Equal(t, 1, scanned(tick), "the tick visited other tasks than the one a held")
	dispatch()
	got, _ := e.Task(held.ID)
	require.Equal(t, "b", got.ExecutorID, "reassigned")
	require.True(t, answer(e, held.ID, domain.StatusCompleted))

	// A stream of b closes with two tasks sent on it, and one is answered:
	// the tick visits the other only, until it is handed out again.
	first := submit(t, e, TaskSpec{ExecutorType: "tax", TimeoutSeconds: 1})
	second := submit(t, e, TaskSpec{ExecutorType: "tax", TimeoutSeconds: 1})
	dispatch()
	assert.Equal(t, 2, scanned(func() { e.StreamClosed("b", []string{first.ID, second.ID}) }), "closing the stream visited tasks not sent on it")
	require.True(t, answer(e, first.ID, domain.StatusCompleted))
	assert.Equal(t, 1, scanned(tick), "the tick visited an answered task")
	clock.advance(2 * time.Second) // the timeout and the grace
	assert.Equal(t, 1, scanned(tick))
	got, _ = e.Task(second.ID)
	assert.Equal(t, StatePending, got.State, "not handed out again once overdue")
	assert.Zero(t, scanned(tick), "the tick visited a task handed out again")
	assert.Len(t, e.Tasks(), 4, "three finished tasks and the pending one")
}

// TestTaskContextsReachTheWireWhole: a context that Struct cannot hold as
// it is (a typed slice, a time) is converted through JSON at Submit and
// reaches a gRPC executor whole; one that JSON cannot carry either (a
// func, a channel, NaN) is refused at Submit, never sent as {}.
func TestTaskContextsReachTheWireWhole(t *testing.T) {
	e, g := startGRPCEngine(t, Config{})
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})
	stream, _ := openTaskStream(t, g, "a", 4)
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	task := submit(t, e, TaskSpec{ExecutorType: "tax", Context: map[string]any{"tags": []string{"x", "y"}, "at": at, "amount": 7}})
	want := map[string]any{"tags": []any{"x", "y"}, "at": "2025-01-02T03:04:05Z", "amount": 7.0}
	assert.Equal(t, want, task.Context, "the task's context, as the API shows it")
	assert.Equal(t, want, stream.next(t).GetContext().AsMap(), "the context sent")

	for name, value := range map[string]map[string]any{
		"a func":    {"callback": func() {}},
		"a channel": {"nested": map[string]any{"ch": make(chan int)}},
		"NaN":       {"ratio": math.NaN()},
	} {
		_, err := e.Submit(TaskSpec{ExecutorType: "tax", Context: value})
		assert.ErrorContains(t, err, "context is not representable as JSON", name)
	}
	assert.Len(t, e.Tasks(), 1, "a refused task was created")
}
