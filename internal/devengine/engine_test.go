package devengine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e, d
}

func waitFor(t *testing.T, e *Engine, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.WaitUntil(ctx, cond), what)
}

func answer(e *Engine, taskID string, status domain.Status) bool {
	t, _ := e.Task(taskID)
	return e.Result(domain.Result{RunID: t.RunID, NodeID: t.NodeID, Attempt: t.Attempt, Status: status, ExecutorID: t.ExecutorID})
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
	require.NoError(t, e.Heartbeat("healthy", 0))
	e.expire()
	waitFor(t, e, "reassigned", func() bool { return d.count("healthy") == 1 })
	ex, _ := e.Executor("dying")
	assert.False(t, ex.Healthy)

	clock.advance(31 * time.Second)
	require.NoError(t, e.Heartbeat("healthy", 0))
	e.expire()
	_, known := e.Executor("dying")
	assert.False(t, known, "an executor silent for twice the expiry is removed")
	assert.ErrorIs(t, e.Heartbeat("dying", 0), ErrUnknownExecutor)

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
			Result: &domain.Result{Error: &domain.ErrorInfo{Code: "INVALID_INPUT"}}},
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
	d.engine.Result(domain.Result{RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt, Status: domain.StatusCompleted})
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
