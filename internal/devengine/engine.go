package devengine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/domain"
)

// Task states besides the result statuses (COMPLETED, FAILED, CANCELLED,
// SKIPPED), which are final.
const (
	StatePending  = "PENDING"
	StateAssigned = "ASSIGNED"
)

// TaskSpec is a task submitted through the API.
type TaskSpec struct {
	ExecutorType string `json:"executorType"`
	NodeType     string `json:"nodeType"`
	// NodeID, when set, must follow Gamelan's id rules
	// (^[a-zA-Z0-9_-]{1,255}$), which executors enforce; when empty the
	// engine makes one.
	NodeID string `json:"nodeId"`
	// Context is the task's variables. The task keeps them as JSON carries
	// them (numbers as float64, typed slices as []any, times as RFC 3339
	// strings), which every transport can deliver; a context JSON cannot
	// carry (a func, a channel, NaN) is refused.
	Context        map[string]any `json:"context"`
	TimeoutSeconds int            `json:"timeoutSeconds"`
}

// Task is a submitted task and what became of it.
type Task struct {
	ID             string         `json:"taskId"`
	RunID          string         `json:"runId"`
	NodeID         string         `json:"nodeId"`
	Attempt        int            `json:"attempt"`
	ExecutionToken string         `json:"executionToken"`
	ExecutorType   string         `json:"executorType,omitempty"`
	NodeType       string         `json:"nodeType,omitempty"`
	Context        map[string]any `json:"context,omitempty"`
	Timeout        time.Duration  `json:"-"`
	State          string         `json:"state"`
	// ExecutorID is the executor it was last given to; Transport how,
	// once that executor accepted it or answered.
	ExecutorID string `json:"executorId,omitempty"`
	Transport  string `json:"transport,omitempty"`
	// Deliveries counts how many times it was handed out (reassignments
	// after an executor died, retries after refusals).
	Deliveries  int       `json:"deliveries"`
	SubmittedAt time.Time `json:"submittedAt"`
	CompletedAt time.Time `json:"completedAt,omitzero"`
	LatencyMs   float64   `json:"latencyMs,omitempty"`
	Result      *Result   `json:"result,omitempty"`

	notBefore time.Time // delivery retries wait until then
	route     string    // the transport its delivery in flight takes (see Router)
	// overdue, once the stream it was sent on has closed, is when it goes
	// back to the queue unless answered meanwhile.
	overdue time.Time
	// span is its dispatch span while tracing is on, from its first
	// delivery until it is final.
	span trace.Span
}

// Final reports whether the task has a result.
func (t *Task) Final() bool { return t.State != StatePending && t.State != StateAssigned }

// key is "runId:nodeId:attempt", what results are deduplicated on.
func (t *Task) key() string { return domain.IdempotencyKey(t.RunID, t.NodeID, t.Attempt) }

// Domain returns the task as the executor side sees it.
func (t *Task) Domain() domain.Task {
	return domain.Task{
		TaskID: t.ID, RunID: t.RunID, NodeID: t.NodeID, NodeType: t.NodeType, ExecutorType: t.ExecutorType,
		ExecutorID: t.ExecutorID, Attempt: t.Attempt, ExecutionToken: t.ExecutionToken,
		Context: t.Context, Timeout: t.Timeout, ScheduledAt: t.SubmittedAt,
	}
}

// Result is a task's recorded result, as the API shows it.
type Result struct {
	Status      domain.Status  `json:"status"`
	Output      map[string]any `json:"output,omitempty"`
	Error       *ResultError   `json:"error,omitempty"`
	ExecutorID  string         `json:"executorId,omitempty"`
	CompletedAt time.Time      `json:"completedAt,omitzero"`
	DurationMs  float64        `json:"durationMs,omitempty"`
}

// ResultError is why a task did not complete.
type ResultError struct {
	Code       string         `json:"code"`
	Message    string         `json:"message,omitempty"`
	StackTrace string         `json:"stackTrace,omitempty"`
	Context    map[string]any `json:"context,omitempty"`
	Retryable  bool           `json:"retryable"`
}

func resultView(r domain.Result) *Result {
	v := &Result{Status: r.Status, Output: r.Output, ExecutorID: r.ExecutorID, CompletedAt: r.CompletedAt,
		DurationMs: float64(r.Duration.Microseconds()) / 1000}
	if e := r.Error; e != nil {
		v.Error = &ResultError{Code: e.Code, Message: e.Message, StackTrace: e.StackTrace, Context: e.Context, Retryable: e.Retryable}
	}
	return v
}

// Deliverer hands a task to an executor over one communication type. Deliver
// returns nil when the executor (or the broker) has accepted the task; an
// error puts the task back in the queue to be tried again.
type Deliverer interface {
	Deliver(ctx context.Context, to Executor, task domain.Task) (transport string, err error)
}

// Router is implemented by deliverers that can name, before delivering,
// the transport a delivery to an executor takes now (what Deliver would
// answer), so that a task whose result overtakes the return of its
// delivery (an executor reports before its push ack is read) is not left
// final without a transport.
type Router interface {
	Route(to Executor) string
}

// Streamer is implemented by deliverers that hold task streams executors
// opened (gRPC's StreamTasks and ExecuteStream). Dispatch offers a task to
// an executor's streams first, at once and without blocking, so that the
// room they have left is exact when the next task is assigned.
type Streamer interface {
	// Offer queues a task on the executor's open streams and returns the
	// transport; false when the executor has none (Deliver then).
	Offer(to Executor, task domain.Task) (transport string, ok bool)
	// Room is how many more tasks the executor's open streams can take;
	// limited is false when they set no limit of their own.
	Room(executorID string) (room int, limited bool)
}

// Canceller is implemented by deliverers that can cancel a task in flight.
// Cancel sends a cancellation of a task delivered to an executor, behind
// the task, and reports false when the task's route cannot carry one.
type Canceller interface {
	Cancel(executorID, taskID, reason string) bool
}

// Config configures the engine.
type Config struct {
	// HeartbeatExpiry marks an executor unhealthy after this long without a
	// heartbeat, and removes it after twice that (30s).
	HeartbeatExpiry time.Duration
	// RetryDelay is the first wait before a refused delivery is retried;
	// it doubles per refusal up to 2s (50ms).
	RetryDelay time.Duration
	// TaskTimeout is the timeout assumed of a task that has none: the
	// executor's default (5m).
	TaskTimeout time.Duration
	// ResultGrace is how long past its timeout the result of a task sent
	// on a stream that then closed is awaited before the task is handed
	// out again (10s).
	ResultGrace time.Duration
	// RetainFinished is how many final tasks (answered or cancelled) the
	// engine keeps for the task API and the summary (100000). Past it, the
	// task that finished first is forgotten first: the API answers 404 for
	// it, and a late result of it counts as unknown, not as a duplicate.
	// Tasks not yet final are always kept.
	RetainFinished int
	Log            *slog.Logger
	// Now is the clock (time.Now).
	Now func() time.Time
	// TracerProvider, when set, turns tracing on: the engine starts a
	// "dispatch <executor type>" producer span per task, sends its trace
	// context with the task (push metadata, the reserved keys of a
	// streamed task's context, Kafka headers, REST headers; see
	// docs/protocol.md, "Trace context") and ends it when the task's result
	// arrives, linking the executor's span. Nil is off: the engine sends no
	// trace context.
	TracerProvider trace.TracerProvider
	// Propagator writes and reads trace contexts (W3C trace context and
	// baggage if nil).
	Propagator propagation.TextMapPropagator
}

// Engine is the reference engine's core: registry, task queue, dispatch and
// results. Transports (gRPC, HTTP, Kafka) call it; it calls them back through
// Deliverers.
type Engine struct {
	cfg     Config
	reg     *registry
	log     *slog.Logger
	tracing tracing

	deliverers map[string]Deliverer // by communication type

	mu    sync.Mutex
	seq   int
	tasks map[string]*Task // by task id: those not final, and the retained final ones
	byKey map[string]*Task // by run:node:attempt, the same tasks
	// finished holds the retained final tasks in the order they became
	// final, the next to forget first (see Config.RetainFinished).
	finished []*Task
	// queues holds the pending tasks, FIFO per (executor type, node type):
	// dispatch stops scanning a queue at the first task nobody can take.
	queues  map[string][]*Task
	delayed []*Task // refused deliveries waiting to be retried
	// held indexes the assigned tasks by executor id, then task id, so
	// that what an executor's loss, unregistration or closed stream
	// concerns is found without visiting every task.
	held map[string]map[string]*Task
	// orphans, by task id, are assigned tasks sent on streams that
	// closed; they wait for their results until overdue. A task leaves
	// it once answered or taken back.
	orphans map[string]*Task
	changed chan struct{} // closed and replaced on every change
	// scanned counts the tasks that the scans for an executor's tasks and
	// for overdue results have visited: they visit only assigned tasks of
	// that executor, or orphans, never final tasks.
	scanned int

	wake       chan struct{}
	deliveries sync.WaitGroup

	duplicates     atomic.Int64
	unknown        atomic.Int64
	refused        atomic.Int64
	refusedResults atomic.Int64
}

// New returns an engine; call SetDeliverer for each transport, then Run.
func New(cfg Config) *Engine {
	if cfg.HeartbeatExpiry == 0 {
		cfg.HeartbeatExpiry = 30 * time.Second
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = 50 * time.Millisecond
	}
	if cfg.TaskTimeout == 0 {
		cfg.TaskTimeout = 5 * time.Minute
	}
	if cfg.ResultGrace == 0 {
		cfg.ResultGrace = 10 * time.Second
	}
	if cfg.RetainFinished < 1 {
		cfg.RetainFinished = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Engine{
		cfg: cfg, reg: newRegistry(cfg.HeartbeatExpiry, cfg.Now), log: cfg.Log, tracing: newTracing(cfg),
		deliverers: map[string]Deliverer{},
		tasks:      map[string]*Task{}, byKey: map[string]*Task{}, queues: map[string][]*Task{},
		held: map[string]map[string]*Task{}, orphans: map[string]*Task{},
		changed: make(chan struct{}), wake: make(chan struct{}, 1),
	}
}

// SetDeliverer sets how tasks reach executors of a communication type
// (GRPC, KAFKA, REST). Call before Run.
func (e *Engine) SetDeliverer(communicationType string, d Deliverer) {
	e.deliverers[communicationType] = d
}

// Run dispatches tasks, expires silent executors and hands out again the
// tasks whose results are overdue until ctx ends, then waits for
// deliveries in progress.
func (e *Engine) Run(ctx context.Context) error {
	ticker := time.NewTicker(min(e.cfg.HeartbeatExpiry/4, time.Second))
	defer ticker.Stop()
	defer e.deliveries.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case <-ticker.C:
			e.expire()
			e.requeueOverdue()
		}
		e.dispatch(ctx)
	}
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// notifyLocked wakes whoever waits for a change. Callers hold mu.
func (e *Engine) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// Submit queues a task and returns it. It refuses a task without an
// executor type or node type, with a timeout out of range, with a node id
// that breaks Gamelan's id rules, or with a context JSON cannot carry
// (see TaskSpec); the HTTP API answers 400 with the error.
func (e *Engine) Submit(spec TaskSpec) (Task, error) {
	if spec.ExecutorType == "" && spec.NodeType == "" {
		return Task{}, errors.New("a task needs an executorType or a nodeType")
	}
	if spec.TimeoutSeconds < 0 || time.Duration(spec.TimeoutSeconds) > domain.MaxTimeout/time.Second {
		return Task{}, fmt.Errorf("timeoutSeconds must be between 0 and %d (365 days)", domain.MaxTimeout/time.Second)
	}
	if spec.NodeID != "" && !domain.ValidID(spec.NodeID) {
		return Task{}, fmt.Errorf("nodeId must match ^[a-zA-Z0-9_-]{1,255}$ (Gamelan's id rules, which executors enforce), got %q", spec.NodeID)
	}
	variables, err := jsonSafe(spec.Context)
	if err != nil {
		return Task{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	n := strconv.Itoa(e.seq)
	t := &Task{
		ID: "task-" + n, RunID: "run-" + n, NodeID: spec.NodeID, Attempt: 1, ExecutionToken: "token-" + n,
		ExecutorType: spec.ExecutorType, NodeType: spec.NodeType, Context: variables,
		Timeout: time.Duration(spec.TimeoutSeconds) * time.Second, State: StatePending, SubmittedAt: e.cfg.Now(),
	}
	if t.NodeID == "" {
		t.NodeID = "node-" + n
	}
	if t.Context == nil {
		t.Context = map[string]any{}
	}
	e.tasks[t.ID] = t
	e.byKey[t.key()] = t
	e.enqueueLocked(t, false)
	e.notifyLocked()
	e.poke()
	return *t, nil
}

// CanServe reports whether a registered, healthy executor can take tasks
// of the spec's executor type (or, without one, its node type).
func (e *Engine) CanServe(spec TaskSpec) bool {
	for _, ex := range e.reg.list() {
		if !ex.Healthy {
			continue
		}
		if spec.ExecutorType != "" && ex.Type == spec.ExecutorType {
			return true
		}
		if spec.ExecutorType == "" && (ex.Type == spec.NodeType || slices.Contains(ex.SupportedNodeTypes, spec.NodeType)) {
			return true
		}
	}
	return false
}

// queueKey groups tasks that the same executors can take.
func queueKey(t *Task) string { return t.ExecutorType + "|" + t.NodeType }

// enqueueLocked puts a pending task at the back of its queue, or the front
// when it was already waiting (a reassignment). Callers hold mu.
func (e *Engine) enqueueLocked(t *Task, front bool) {
	k := queueKey(t)
	if front {
		e.queues[k] = append([]*Task{t}, e.queues[k]...)
	} else {
		e.queues[k] = append(e.queues[k], t)
	}
}

// dispatch gives every pending task it can to an executor.
func (e *Engine) dispatch(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	var nextRetry time.Time
	stillDelayed := e.delayed[:0]
	for _, t := range e.delayed {
		switch {
		case t.State != StatePending:
		case now.Before(t.notBefore):
			stillDelayed = append(stillDelayed, t)
			if nextRetry.IsZero() || t.notBefore.Before(nextRetry) {
				nextRetry = t.notBefore
			}
		default:
			e.enqueueLocked(t, true)
		}
	}
	clear(e.delayed[len(stillDelayed):])
	e.delayed = stillDelayed
	for k, queue := range e.queues {
		for len(queue) > 0 {
			t := queue[0]
			if t.State != StatePending { // cancelled while queued
				queue = queue[1:]
				continue
			}
			ex, ok := e.reg.assign(t.ExecutorType, t.NodeType, e.streamRoom)
			if !ok {
				break // nobody can take this queue's head, so not the rest either
			}
			queue = queue[1:]
			d := e.deliverers[ex.CommunicationType]
			if d == nil {
				e.reg.release(ex.ID)
				e.log.Warn("no transport for executor", slog.String("executor_id", ex.ID), slog.String("communication_type", ex.CommunicationType))
				e.delayed = append(e.delayed, t)
				t.notBefore = now.Add(time.Second)
				continue
			}
			t.State, t.ExecutorID, t.Transport, t.route = StateAssigned, ex.ID, "", ""
			e.holdLocked(t)
			t.Deliveries++
			task, delivery := t.Domain(), t.Deliveries
			task.Trace = e.tracing.start(t)
			if s, ok := d.(Streamer); ok {
				if transport, ok := s.Offer(ex, task); ok {
					t.Transport = transport
					continue
				}
			}
			if r, ok := d.(Router); ok {
				t.route = r.Route(ex)
			}
			e.deliveries.Go(func() { e.deliver(ctx, d, ex, t, task, delivery) })
		}
		if len(queue) == 0 {
			delete(e.queues, k)
		} else {
			e.queues[k] = queue
		}
	}
	e.notifyLocked()
	if !nextRetry.IsZero() {
		time.AfterFunc(nextRetry.Sub(now), e.poke)
	}
}

// streamRoom reports whether an executor's open task streams, if it has
// some, can take one more task. Called by the registry's assign.
func (e *Engine) streamRoom(ex *Executor) bool {
	s, ok := e.deliverers[ex.CommunicationType].(Streamer)
	if !ok {
		return true
	}
	room, limited := s.Room(ex.ID)
	return !limited || room > 0
}

// deliver hands one task over (its delivery-th); a refusal puts it back
// in the queue.
func (e *Engine) deliver(ctx context.Context, d Deliverer, ex Executor, t *Task, task domain.Task, delivery int) {
	transport, err := d.Deliver(ctx, ex, task)
	e.mu.Lock()
	defer e.mu.Unlock()
	// Meanwhile the task may have been answered, taken back (which
	// released its slot) or handed out again.
	current := t.Deliveries == delivery
	if err == nil {
		// A result that came in before the delivery returned leaves the
		// transport to this delivery.
		if current && t.State != StatePending {
			t.Transport = transport
		}
		e.notifyLocked()
		return
	}
	if !current || t.State != StateAssigned {
		return
	}
	e.log.Debug("delivery refused, will retry", slog.String("task_id", t.ID), slog.String("executor_id", ex.ID), slog.Any("error", err))
	e.takeBackLocked(t)
	delay := e.cfg.RetryDelay << min(t.Deliveries-1, 6)
	t.notBefore = e.cfg.Now().Add(min(delay, 2*time.Second))
	e.delayed = append(e.delayed, t)
	e.notifyLocked()
	e.poke()
}

// takeBackLocked takes an assigned task back from its executor, freeing
// its slot, for the caller to queue again. Callers hold mu.
func (e *Engine) takeBackLocked(t *Task) {
	e.reg.release(t.ExecutorID)
	e.unholdLocked(t)
	t.State, t.ExecutorID = StatePending, ""
}

// holdLocked indexes a task just assigned to t.ExecutorID. Callers hold mu.
func (e *Engine) holdLocked(t *Task) {
	tasks := e.held[t.ExecutorID]
	if tasks == nil {
		tasks = map[string]*Task{}
		e.held[t.ExecutorID] = tasks
	}
	tasks[t.ID] = t
}

// unholdLocked takes an assigned task out of the indexes of assigned
// tasks and orphans, before it is answered or taken back. Callers hold mu.
func (e *Engine) unholdLocked(t *Task) {
	if tasks := e.held[t.ExecutorID]; tasks != nil {
		delete(tasks, t.ID)
		if len(tasks) == 0 {
			delete(e.held, t.ExecutorID)
		}
	}
	delete(e.orphans, t.ID)
	t.overdue = time.Time{}
}

// finishLocked records that a task became final, and forgets the final
// tasks that finished first beyond RetainFinished. Callers hold mu.
func (e *Engine) finishLocked(t *Task) {
	e.tracing.end(t, nil) // a task final without a result (cancelled while queued)
	e.finished = append(e.finished, t)
	for len(e.finished) > e.cfg.RetainFinished {
		old := e.finished[0]
		e.finished[0] = nil
		e.finished = e.finished[1:]
		delete(e.tasks, old.ID)
		delete(e.byKey, old.key())
	}
}

// expire handles executors whose heartbeats stopped: the tasks they held
// go back to the queue (at least once: a late result still counts).
func (e *Engine) expire() {
	lost := e.reg.expire()
	if len(lost) == 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range lost {
		e.log.Warn("executor stopped heartbeating; reassigning its tasks", slog.String("executor_id", id))
		e.requeueHeldLocked(id)
	}
	e.notifyLocked()
	e.poke()
}

// requeueHeldLocked puts the tasks assigned to an executor back in the
// queue. Callers hold mu.
func (e *Engine) requeueHeldLocked(executorID string) {
	for _, t := range e.held[executorID] { // takeBackLocked deletes t from it: allowed while ranging
		e.scanned++
		e.takeBackLocked(t)
		e.enqueueLocked(t, true)
	}
}

// GiveBack returns a task that was handed to a transport but never reached
// its executor (a stream closed before sending it) to the queue.
func (e *Engine) GiveBack(taskID, executorID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tasks[taskID]
	if t == nil || t.State != StateAssigned || t.ExecutorID != executorID {
		return
	}
	e.takeBackLocked(t)
	e.enqueueLocked(t, true)
	e.notifyLocked()
	e.poke()
}

// StreamClosed is told that a task stream of an executor closed, with the
// tasks it sent that were unanswered. The executor may not have read them
// before it closed, or may be running them (it drains, or reopens its
// stream for a fresh token): each still assigned to it goes back to the
// queue once its result is overdue, after its timeout (TaskTimeout when it
// has none) and ResultGrace. Give the tasks it never sent back first.
func (e *Engine) StreamClosed(executorID string, taskIDs []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	for _, id := range taskIDs {
		e.scanned++
		if t := e.held[executorID][id]; t != nil {
			t.overdue = now.Add(cmp.Or(t.Timeout, e.cfg.TaskTimeout) + e.cfg.ResultGrace)
			e.orphans[t.ID] = t
		}
	}
}

// requeueOverdue puts the tasks of closed streams whose results are
// overdue back in the queue. It visits the orphans only: answered and
// taken-back tasks have left them.
func (e *Engine) requeueOverdue() {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.cfg.Now()
	requeued := false
	for _, t := range e.orphans { // takeBackLocked deletes t from it: allowed while ranging
		e.scanned++
		if now.Before(t.overdue) {
			continue
		}
		e.log.Warn("no result for a task sent on a stream that closed; handing it out again",
			slog.String("task_id", t.ID), slog.String("executor_id", t.ExecutorID))
		e.takeBackLocked(t)
		e.enqueueLocked(t, true)
		requeued = true
	}
	if requeued {
		e.notifyLocked()
		e.poke()
	}
}

// Register adds or refreshes an executor.
func (e *Engine) Register(ex Executor) {
	e.reg.register(ex)
	e.log.Info("executor registered", slog.String("executor_id", ex.ID), slog.String("executor_type", ex.Type),
		slog.String("communication_type", ex.CommunicationType), slog.String("endpoint", ex.Endpoint), slog.String("via", ex.Via))
	e.changedNow()
}

// Unregister removes an executor; tasks it still held are reassigned.
func (e *Engine) Unregister(id string) bool {
	ok := e.reg.unregister(id)
	e.mu.Lock()
	e.requeueHeldLocked(id)
	e.notifyLocked()
	e.mu.Unlock()
	e.poke()
	if ok {
		e.log.Info("executor unregistered", slog.String("executor_id", id))
	}
	return ok
}

// Heartbeat records a heartbeat; ErrUnknownExecutor tells the executor to
// register again. Status DRAINING stops new tasks going to the executor
// (the tasks it holds stay with it); any other status lifts that, and an
// empty one (a heartbeat that carries none) changes nothing.
func (e *Engine) Heartbeat(hb domain.Heartbeat) error {
	back, err := e.reg.heartbeat(hb)
	if back {
		e.poke() // an unhealthy or draining executor takes tasks again
	}
	return err
}

func (e *Engine) changedNow() {
	e.mu.Lock()
	e.notifyLocked()
	e.mu.Unlock()
	e.poke()
}

// Result records a result, deduplicated on (run id, node id, attempt). It
// reports whether the result was new. A result whose status is not one a
// result may carry, or whose execution token is not the task's, is
// refused and counted.
func (e *Engine) Result(res domain.Result) bool {
	if !res.Status.Valid() {
		e.refuseResult(res, fmt.Sprintf("invalid status %q", res.Status))
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.byKey[res.Key()]
	switch {
	case t == nil:
		e.unknown.Add(1)
		return false
	case res.ExecutionToken != t.ExecutionToken:
		e.refuseResult(res, "wrong execution token")
		return false
	case t.Final():
		e.duplicates.Add(1)
		return false
	}
	if t.State == StateAssigned {
		e.reg.release(t.ExecutorID)
		e.unholdLocked(t)
		if t.Transport == "" {
			t.Transport = t.route // the result overtook its delivery's return
		}
	}
	if res.ExecutorID != "" {
		t.ExecutorID = res.ExecutorID
	}
	e.tracing.end(t, &res)
	t.Result, t.State = resultView(res), string(res.Status)
	t.CompletedAt = e.cfg.Now()
	t.LatencyMs = float64(t.CompletedAt.Sub(t.SubmittedAt).Microseconds()) / 1000
	e.finishLocked(t)
	e.notifyLocked()
	e.poke()
	return true
}

// refuseResult counts and logs a result that breaks the protocol.
func (e *Engine) refuseResult(res domain.Result, reason string) {
	e.refusedResults.Add(1)
	e.log.Warn("result refused: "+reason, slog.String("run_id", res.RunID), slog.String("node_id", res.NodeID),
		slog.Int("attempt", res.Attempt), slog.String("executor_id", res.ExecutorID))
}

// ErrNoTask is returned for a task the engine does not know: never
// submitted, or final and forgotten (see Config.RetainFinished).
var ErrNoTask = errors.New("no such task")

// Cancel cancels a task: a queued one at once, a delivered one through its
// transport when the transport can (the executor then answers CANCELLED).
// It holds mu throughout, so that the task cannot change hands meanwhile.
// A task the engine does not know is an error wrapping ErrNoTask.
func (e *Engine) Cancel(taskID, reason string) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tasks[taskID]
	switch {
	case t == nil:
		return false, fmt.Errorf("task %s: %w", taskID, ErrNoTask)
	case t.State == StatePending:
		t.State = string(domain.StatusCancelled)
		t.CompletedAt = e.cfg.Now()
		t.Result = &Result{Status: domain.StatusCancelled, Error: &ResultError{Code: domain.CodeCancelled, Message: reason}}
		e.finishLocked(t)
		e.notifyLocked()
		return true, nil
	case t.Final():
		return false, fmt.Errorf("task %s already finished %s", taskID, t.State)
	case t.Transport == "":
		// Until its delivery returns, a cancellation could overtake it.
		return false, fmt.Errorf("task %s is being delivered to %s; cancel it once delivered", taskID, t.ExecutorID)
	}
	ex, _ := e.reg.get(t.ExecutorID)
	if c, ok := e.deliverers[ex.CommunicationType].(Canceller); ok && c.Cancel(t.ExecutorID, taskID, reason) {
		return true, nil
	}
	return false, fmt.Errorf("task %s is running on %s, whose transport cannot cancel it", taskID, t.ExecutorID)
}

// Task returns a copy of a task; false when the engine does not know it
// (never submitted, or final and forgotten: see Config.RetainFinished).
func (e *Engine) Task(id string) (Task, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.tasks[id]
	if !ok {
		return Task{}, false
	}
	return *t, true
}

// Tasks returns copies of every task not final and of the final tasks
// retained (see Config.RetainFinished).
func (e *Engine) Tasks() []Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Task, 0, len(e.tasks))
	for _, t := range e.tasks {
		out = append(out, *t)
	}
	return out
}

// Executors returns the registry's executors.
func (e *Engine) Executors() []Executor { return e.reg.list() }

// Executor returns one executor.
func (e *Engine) Executor(id string) (Executor, bool) { return e.reg.get(id) }

// WaitUntil waits until cond holds (checked on every change) or ctx ends.
func (e *Engine) WaitUntil(ctx context.Context, cond func() bool) error {
	for {
		e.mu.Lock()
		changed := e.changed
		e.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Counters are the engine's totals.
type Counters struct {
	Duplicates     int64 `json:"duplicateResults"`
	UnknownResults int64 `json:"unknownResults"`
	// RefusedResults have an invalid status or a wrong execution token.
	RefusedResults int64 `json:"refusedResults"`
	Refused        int64 `json:"refusedCalls"`
}

// Counters returns the totals so far.
func (e *Engine) Counters() Counters {
	return Counters{Duplicates: e.duplicates.Load(), UnknownResults: e.unknown.Load(),
		RefusedResults: e.refusedResults.Load(), Refused: e.refused.Load()}
}

// Refused counts an inbound call refused for its credentials.
func (e *Engine) Refused() { e.refused.Add(1) }
