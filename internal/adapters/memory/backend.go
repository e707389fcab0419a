package memory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// DefaultHistoryLimit is how many entries each of the engine's records keeps
// unless WithHistoryLimit says otherwise.
const DefaultHistoryLimit = 100_000

// ErrInjected is wrapped by every error returned because of an injected
// fault (FailDeliveries, FailRegistrations, FailHeartbeats).
var ErrInjected = errors.New("injected fault")

// Option configures a Backend.
type Option func(*Backend)

// WithHistoryLimit keeps the n most recent entries of each record (results,
// unique results, heartbeats per executor, acknowledged and rejected tasks,
// unregistrations, violations) instead of DefaultHistoryLimit. Values below 1
// keep the default.
func WithHistoryLimit(n int) Option {
	return func(e *Backend) {
		if n >= 1 {
			e.historyLimit = n
		}
	}
}

// Backend is an in-process stand-in for the workflow engine (not a wire
// protocol: the engine sides of those are in internal/engine). Its adapters
// (TaskSource, ResultSink, Registrar, Heartbeater) are what the runtime
// talks to; its other methods are the engine side that tests and the dev
// mode drive: submit and cancel tasks, read results, registrations and
// heartbeats, and inject faults. All methods are safe for concurrent use.
type Backend struct {
	historyLimit int

	mu sync.Mutex
	// changed is closed and replaced on every change of state, so that
	// waiters (sources waiting for a task, WaitUntil) wake without polling.
	changed chan struct{}

	queue        []domain.Task        // the engine's backlog, next task first
	inFlight     map[uint64]*delivery // by delivery id
	nextDelivery uint64
	acknowledged *history[domain.Task]
	rejected     *history[domain.Task]
	intakes      []ports.Intake // of started sources, in start order

	results     *history[domain.Result]
	unique      map[string]domain.Result
	uniqueKeys  *history[string] // the keys of unique, oldest first, for eviction
	uniqueCount int              // unique results ever received

	registrations map[string]domain.Registration
	heartbeats    map[string]*history[domain.Heartbeat]
	unregistered  *history[string]
	violations    *history[error]

	failDeliveries    int
	failRegistrations int
	failHeartbeats    int
	hold              *deliveryHold // HoldDeliveries, nil when not holding
}

// NewBackend returns a backend with an empty queue and no registrations.
func NewBackend(opts ...Option) *Backend {
	e := &Backend{historyLimit: DefaultHistoryLimit}
	for _, o := range opts {
		o(e)
	}
	e.changed = make(chan struct{})
	e.inFlight = make(map[uint64]*delivery)
	e.acknowledged = newHistory[domain.Task](e.historyLimit)
	e.rejected = newHistory[domain.Task](e.historyLimit)
	e.results = newHistory[domain.Result](e.historyLimit)
	e.unique = make(map[string]domain.Result)
	e.uniqueKeys = newHistory[string](e.historyLimit)
	e.registrations = make(map[string]domain.Registration)
	e.heartbeats = make(map[string]*history[domain.Heartbeat])
	e.unregistered = newHistory[string](e.historyLimit)
	e.violations = newHistory[error](e.historyLimit)
	return e
}

// TaskSource returns a new source of this engine's tasks. Several sources
// of one engine compete for its queue, like consumers of one group.
func (e *Backend) TaskSource() *TaskSource { return &TaskSource{engine: e} }

// ResultSink returns a sink that delivers results to this engine.
func (e *Backend) ResultSink() *ResultSink { return &ResultSink{engine: e} }

// Registrar returns a registrar backed by this engine's registry.
func (e *Backend) Registrar() *Registrar { return &Registrar{engine: e} }

// Heartbeater returns a heartbeater backed by this engine's registry.
func (e *Backend) Heartbeater() *Heartbeater { return &Heartbeater{engine: e} }

// notifyLocked wakes every waiter. e.mu must be held.
func (e *Backend) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// Submit queues a copy of task for the engine's task sources. It never
// refuses: the queue is the engine's backlog, and sources take from it only
// as the runtime has room. Submit does not validate the task, so that tests
// can submit malformed ones and watch the runtime refuse them (Rejected).
func (e *Backend) Submit(task domain.Task) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.queue = append(e.queue, cloneTask(task))
	e.notifyLocked()
}

// Cancel forwards an engine-side cancellation to the runtime: it calls
// Intake.Cancel of each started source, in start order, until one reports
// the task found, and returns whether one did. taskID is the task id or the
// idempotency key. A task still in the engine's queue is not withdrawn: the
// runtime has not seen it yet, so Cancel reports false for it.
func (e *Backend) Cancel(taskID, reason string) bool {
	e.mu.Lock()
	intakes := slices.Clone(e.intakes)
	e.mu.Unlock()
	for _, in := range intakes {
		if in.Cancel(taskID, reason) {
			return true
		}
	}
	return false
}

// Pending returns the tasks waiting in the engine's queue, next first:
// submitted and not yet offered, or handed back and not yet offered again.
func (e *Backend) Pending() []domain.Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneTasks(e.queue)
}

// Unsettled returns the tasks the runtime accepted and has not settled yet,
// in the order they were offered.
func (e *Backend) Unsettled() []domain.Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := slices.Sorted(maps.Keys(e.inFlight))
	tasks := make([]domain.Task, 0, len(ids))
	for _, id := range ids {
		tasks = append(tasks, cloneTask(e.inFlight[id].task))
	}
	return tasks
}

// Acknowledged returns the tasks the runtime settled with a nil error (the
// result was delivered), in settlement order.
func (e *Backend) Acknowledged() []domain.Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneTasks(e.acknowledged.all())
}

// Rejected returns the tasks the runtime refused as invalid
// (domain.ErrInvalidTask), in refusal order. The engine drops them.
func (e *Backend) Rejected() []domain.Task {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneTasks(e.rejected.all())
}

// Results returns every delivered result in delivery order, duplicates
// included.
func (e *Backend) Results() []domain.Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	results := e.results.all()
	for i, r := range results {
		results[i] = cloneResult(r)
	}
	return results
}

// UniqueResults returns the first result delivered for each
// domain.IdempotencyKey(run id, node id, attempt): the engine's view after
// deduplication.
func (e *Backend) UniqueResults() map[string]domain.Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	unique := make(map[string]domain.Result, len(e.unique))
	for k, r := range e.unique {
		unique[k] = cloneResult(r)
	}
	return unique
}

// WaitForResults waits until at least n unique results have arrived since
// the engine was created, or returns an error wrapping ctx's cause.
func (e *Backend) WaitForResults(ctx context.Context, n int) error {
	err := e.WaitUntil(ctx, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.uniqueCount >= n
	})
	if err != nil {
		e.mu.Lock()
		have := e.uniqueCount
		e.mu.Unlock()
		return fmt.Errorf("wait for %d unique results, %d arrived: %w", n, have, err)
	}
	return nil
}

// WaitUntil waits until cond returns true, or returns ctx's cause. cond is
// evaluated now and after every change of the engine's state (a task
// submitted, offered or settled, a result, registration or heartbeat
// recorded), without the engine's lock held, so it may call the engine's
// getters.
func (e *Backend) WaitUntil(ctx context.Context, cond func() bool) error {
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
			return context.Cause(ctx)
		}
	}
}

// Registration returns the current registration of an executor id.
func (e *Backend) Registration(executorID string) (domain.Registration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg, ok := e.registrations[executorID]
	if !ok {
		return domain.Registration{}, false
	}
	return cloneRegistration(reg), true
}

// Registrations returns the current registrations, ordered by executor id.
func (e *Backend) Registrations() []domain.Registration {
	e.mu.Lock()
	defer e.mu.Unlock()
	regs := make([]domain.Registration, 0, len(e.registrations))
	for _, id := range slices.Sorted(maps.Keys(e.registrations)) {
		regs = append(regs, cloneRegistration(e.registrations[id]))
	}
	return regs
}

// Heartbeats returns the heartbeats accepted for an executor id, oldest
// first. Heartbeats refused as not registered are not included.
func (e *Backend) Heartbeats(executorID string) []domain.Heartbeat {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, ok := e.heartbeats[executorID]
	if !ok {
		return nil
	}
	return h.all()
}

// LastHeartbeat returns the last heartbeat accepted for an executor id.
func (e *Backend) LastHeartbeat(executorID string) (domain.Heartbeat, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, ok := e.heartbeats[executorID]
	if !ok {
		return domain.Heartbeat{}, false
	}
	return h.last()
}

// Unregistered returns the executor ids passed to Unregister, in call
// order, including ids the engine did not know.
func (e *Backend) Unregistered() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.unregistered.all()
}

// Violations returns the breaches of the ports' contracts the engine
// observed from the runtime: a Delivery settled more than once, or settled
// although Offer refused it. A correct runtime leaves it empty.
func (e *Backend) Violations() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.violations.all()
}

// FailDeliveries makes the next n ResultSink.Deliver calls fail with an
// error wrapping ErrInjected, recording nothing. It sets the count rather
// than adding to it: FailDeliveries(0) ends an injected outage.
func (e *Backend) FailDeliveries(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failDeliveries = max(n, 0)
}

// deliveryHold holds ResultSink.Deliver calls unanswered (HoldDeliveries).
type deliveryHold struct {
	held, release chan struct{}
	entered       sync.Once
}

func (h *deliveryHold) enter() { h.entered.Do(func() { close(h.held) }) }

// HoldDeliveries makes ResultSink.Deliver calls wait without an answer, as
// an engine that hangs does, until release is called (then they record
// their results) or their context ends (then they record nothing and
// return an error). held is closed when the first call waits. release may
// be called more than once.
func (e *Backend) HoldDeliveries() (held <-chan struct{}, release func()) {
	h := &deliveryHold{held: make(chan struct{}), release: make(chan struct{})}
	e.mu.Lock()
	e.hold = h
	e.mu.Unlock()
	var once sync.Once
	return h.held, func() {
		once.Do(func() {
			e.mu.Lock()
			if e.hold == h {
				e.hold = nil
			}
			e.mu.Unlock()
			close(h.release)
		})
	}
}

// FailRegistrations makes the next n Registrar.Register calls fail with an
// error wrapping ErrInjected. It sets the count, like FailDeliveries.
func (e *Backend) FailRegistrations(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failRegistrations = max(n, 0)
}

// FailHeartbeats makes the next n Heartbeater.Heartbeat calls fail with an
// error wrapping ErrInjected (not domain.ErrNotRegistered: the engine is
// unreachable, not forgetful). It sets the count, like FailDeliveries.
func (e *Backend) FailHeartbeats(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failHeartbeats = max(n, 0)
}

// Forget drops an executor's registration, as an engine does when
// heartbeats stop or it restarts. Heartbeats for the id then fail with
// domain.ErrNotRegistered until it registers again. Unregistered is not
// affected.
func (e *Backend) Forget(executorID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.registrations, executorID)
	e.notifyLocked()
}

// take removes and returns the next queued task, waiting for one until ctx
// ends.
func (e *Backend) take(ctx context.Context) (domain.Task, bool) {
	for {
		e.mu.Lock()
		if len(e.queue) > 0 {
			task := e.queue[0]
			e.queue[0] = domain.Task{}
			e.queue = e.queue[1:]
			e.notifyLocked()
			e.mu.Unlock()
			return task, true
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return domain.Task{}, false
		}
	}
}

// requeue puts a task back at the front of the queue, so that it is the
// next one offered, as a broker re-reads an uncommitted offset first.
func (e *Backend) requeue(task domain.Task) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.queue = slices.Insert(e.queue, 0, task)
	e.notifyLocked()
}

func (e *Backend) reject(task domain.Task) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rejected.add(task)
	e.notifyLocked()
}

func (e *Backend) attach(in ports.Intake) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.intakes = append(e.intakes, in)
}

func (e *Backend) violation(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.violations.add(err)
	e.notifyLocked()
}

// delivery is one offer of a queued task, tracked until the runtime settles
// it or refuses it, or its source is closed.
type delivery struct {
	engine *Backend
	source *TaskSource // the source that offered it
	id     uint64
	task   domain.Task
	done   atomic.Bool // set by the first Settle, by withdraw, or by revoke
	// revoked is set when the source was closed before the delivery was
	// settled: its Settle is then ignored, as the port allows.
	revoked atomic.Bool
}

// newDelivery records task as in flight from source and returns its tracker.
func (e *Backend) newDelivery(task domain.Task, source *TaskSource) *delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextDelivery++
	d := &delivery{engine: e, source: source, id: e.nextDelivery, task: task}
	e.inFlight[d.id] = d
	e.notifyLocked()
	return d
}

// revoke takes back the tasks source offered and the runtime has not
// settled, as a broker does with the uncommitted records of a consumer that
// left its group: they return to the front of the queue, in the order they
// were offered, and their Settle is ignored from now on.
func (e *Backend) revoke(source *TaskSource) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var back []domain.Task
	for _, id := range slices.Sorted(maps.Keys(e.inFlight)) {
		d := e.inFlight[id]
		if d.source != source {
			continue
		}
		d.revoked.Store(true)
		if d.finish() {
			delete(e.inFlight, id)
			back = append(back, d.task)
		}
	}
	if len(back) > 0 {
		e.queue = slices.Insert(e.queue, 0, back...)
		e.notifyLocked()
	}
}

// port returns the ports.Delivery offered to the runtime: a fresh copy of
// the task, so that the runtime may keep and mutate it.
func (d *delivery) port() ports.Delivery {
	task := cloneTask(d.task)
	return ports.Delivery{Task: &task, Settle: d.settle, Redeliverable: true}
}

// settle is the Delivery's Settle: nil acknowledges, and so does
// domain.ErrUndeliverable (the result was dead-lettered: the task is done,
// as the port contract says); any other error puts the task back at the
// front of the queue.
func (d *delivery) settle(err error) {
	if !d.finish() {
		if d.revoked.Load() {
			return // settled after its source was closed: not honoured
		}
		d.engine.violation(fmt.Errorf("task %s: settled more than once, or after Offer refused it", d.task.ID()))
		return
	}
	e := d.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.inFlight, d.id)
	if err == nil || errors.Is(err, domain.ErrUndeliverable) {
		e.acknowledged.add(d.task)
	} else {
		e.queue = slices.Insert(e.queue, 0, d.task)
	}
	e.notifyLocked()
}

// withdraw ends a delivery that Offer refused; the caller decides what
// becomes of the task.
func (d *delivery) withdraw(offerErr error) {
	if !d.finish() {
		d.engine.violation(fmt.Errorf("task %s: settled although Offer refused it (%v)", d.task.ID(), offerErr))
	}
	e := d.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.inFlight, d.id)
	e.notifyLocked()
}

// finish marks the delivery done and reports whether it was still open.
func (d *delivery) finish() bool {
	return d.done.CompareAndSwap(false, true)
}

func cloneTasks(tasks []domain.Task) []domain.Task {
	c := make([]domain.Task, len(tasks))
	for i, t := range tasks {
		c[i] = cloneTask(t)
	}
	return c
}
