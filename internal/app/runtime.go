package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// Hosted is one executor type served by the process.
type Hosted struct {
	Executor domain.Executor
	// Registration is what the engine is told. The runtime fills its
	// Descriptor from the executor's own, with defaults.
	Registration domain.Registration
	// Transport names the Transport whose source delivers this type's tasks
	// and whose sink carries its results.
	Transport string
	// AdaptiveConcurrency turns adaptive concurrency on for this type even
	// when its descriptor does not (the deployment's choice, see
	// domain.Descriptor.AdaptiveConcurrency).
	AdaptiveConcurrency bool
	// OverrideRateLimit replaces the executor's declared rate limit with
	// RateLimit (nil: none), as the deployment's configuration asks.
	OverrideRateLimit bool
	RateLimit         *domain.RateLimit
}

// Transport pairs a task source with the sink that answers its tasks. A
// result always travels back through the transport its task came from.
type Transport struct {
	Name   string
	Source ports.TaskSource
	Sink   ports.ResultSink
}

// hostedExecutor is a Hosted with its live counters and registration state.
type hostedExecutor struct {
	executor   domain.Executor
	desc       domain.Descriptor
	reg        domain.Registration
	lane       *lane
	running    atomic.Int64
	completed  atomic.Int64
	failed     atomic.Int64
	registered atomic.Bool
	// lastRegistered is the unix-nano time of the last successful registration.
	lastRegistered atomic.Int64
	// registerErr holds the last registration failure, for readiness.
	registerErr atomic.Pointer[error]
	// log is the runtime's logger, which its handlers' loggers extend.
	log *slog.Logger
	// rate enforces the type's rate limit; nil when it has none.
	rate *rateGate
}

// transport is a Transport with its outbox and the executors it serves.
type transport struct {
	Transport
	outbox    *outbox
	executors []*hostedExecutor
}

// Runtime runs hosted executors behind the four ports. Create it with New
// and call Run once.
type Runtime struct {
	cfg         Config
	log         *slog.Logger
	registrar   ports.Registrar
	heartbeater ports.Heartbeater

	executors  []*hostedExecutor
	byType     map[string]*hostedExecutor
	byID       map[string]*hostedExecutor
	transports []*transport

	sched *scheduler
	// tasks owns every task's lifecycle (lifecycle.go).
	tasks *taskTable
	// suspects are the distinct channels of the ports that watch for signs
	// that the engine forgot the executors (ports.RegistrationWatcher).
	suspects []<-chan string

	// outboxCtx bounds result delivery; cancelled at the flush deadline.
	outboxCtx    context.Context
	cancelOutbox context.CancelCauseFunc

	// workers counts the worker goroutines (see worker), and overran the
	// goroutines of handlers abandoned at their deadline that still run;
	// Cleanup hooks wait for them (see cleanup).
	workers sync.WaitGroup
	overran handlerWaits
	// timeoutCause is the cause of a handler's context at the deadline of
	// DefaultTaskTimeout, made once (see handlerContext).
	timeoutCause *domain.Error

	initialized   atomic.Bool // the Initialize hooks have returned, workers run
	intakeStarted atomic.Bool
	draining      atomic.Bool
	delivered     atomic.Int64
	undelivered   atomic.Int64
	deadLettered  atomic.Int64
	ran           atomic.Bool
}

// New validates the configuration and wiring and returns a Runtime that has
// not started anything yet.
func New(cfg Config, hosted []Hosted, transports []Transport, registrar ports.Registrar, heartbeater ports.Heartbeater, log *slog.Logger) (*Runtime, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("runtime config: %w", err)
	}
	if len(hosted) == 0 {
		return nil, errors.New("runtime: no executor types to host")
	}
	if registrar == nil || heartbeater == nil {
		return nil, errors.New("runtime: a registrar and a heartbeater are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sched := newScheduler(cfg.Workers + cfg.QueueSize)
	r := &Runtime{
		cfg:          cfg,
		log:          log,
		registrar:    registrar,
		heartbeater:  heartbeater,
		byType:       make(map[string]*hostedExecutor),
		byID:         make(map[string]*hostedExecutor),
		sched:        sched,
		tasks:        newTaskTable(cfg.DedupeCapacity, sched),
		timeoutCause: timeoutCause(cfg.DefaultTaskTimeout),
	}
	r.outboxCtx, r.cancelOutbox = context.WithCancelCause(context.Background())

	byName := make(map[string]*transport)
	for _, t := range transports {
		if t.Name == "" || t.Source == nil || t.Sink == nil {
			return nil, fmt.Errorf("runtime: transport %q needs a name, a source and a sink", t.Name)
		}
		if byName[t.Name] != nil {
			return nil, fmt.Errorf("runtime: transport %q given twice", t.Name)
		}
		tr := &transport{Transport: t}
		tr.outbox = newOutbox(t.Name, t.Sink, cfg, log, r.settleAll)
		byName[t.Name] = tr
		r.transports = append(r.transports, tr)
	}
	for _, h := range hosted {
		if h.Executor == nil {
			return nil, errors.New("runtime: a hosted executor is nil")
		}
		desc := h.Executor.Descriptor()
		if h.OverrideRateLimit {
			desc.RateLimit = h.RateLimit
		}
		desc = desc.WithDefaults()
		if err := desc.Validate(); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
		desc.AdaptiveConcurrency = desc.AdaptiveConcurrency || h.AdaptiveConcurrency
		reg := h.Registration
		reg.Descriptor = desc
		if reg.CommunicationType == "" {
			reg.CommunicationType = desc.CommunicationType
		}
		if !domain.ValidID(reg.ExecutorID) {
			return nil, fmt.Errorf("runtime: executor type %s: executor id %q must be 1-255 letters, digits, '_' or '-'", desc.Type, reg.ExecutorID)
		}
		if r.byType[desc.Type] != nil {
			return nil, fmt.Errorf("runtime: executor type %s hosted twice", desc.Type)
		}
		if r.byID[reg.ExecutorID] != nil {
			return nil, fmt.Errorf("runtime: executor id %s used twice", reg.ExecutorID)
		}
		tr := byName[h.Transport]
		if tr == nil {
			return nil, fmt.Errorf("runtime: executor type %s: no transport named %q", desc.Type, h.Transport)
		}
		e := &hostedExecutor{executor: h.Executor, desc: desc, reg: reg, lane: r.sched.newLane(desc.MaxConcurrentTasks), log: r.log,
			rate: newRateGate(desc.Type, desc.RateLimit)}
		if desc.AdaptiveConcurrency {
			r.sched.adapt(e.lane, newAdaptiveLimit(desc.Type, desc.MaxConcurrentTasks, r.log, monotonicNow()))
		}
		r.executors = append(r.executors, e)
		r.byType[desc.Type] = e
		r.byID[reg.ExecutorID] = e
		tr.executors = append(tr.executors, e)
	}
	for _, tr := range r.transports {
		if len(tr.executors) == 0 {
			return nil, fmt.Errorf("runtime: transport %s serves no executor type", tr.Name)
		}
	}
	watchers := []any{registrar, heartbeater}
	for _, tr := range r.transports {
		watchers = append(watchers, tr.Source, tr.Sink)
	}
	for _, port := range watchers {
		if w, ok := port.(ports.RegistrationWatcher); ok && w.RegistrationSuspects() != nil && !slices.Contains(r.suspects, w.RegistrationSuspects()) {
			r.suspects = append(r.suspects, w.RegistrationSuspects())
		}
	}
	return r, nil
}

// Run starts the runtime and blocks until ctx ends, then stops it in order
// and returns. Start order: Initialize hooks, workers and result senders,
// registration of every type (retried until it succeeds), task sources,
// heartbeats. Stop order: see Package doc. Run closes every source before
// it returns, whether it started them or not. Run returns an error when the
// runtime could not start; a shutdown requested through ctx is not an error.
func (r *Runtime) Run(ctx context.Context) error {
	if !r.ran.CompareAndSwap(false, true) {
		return errors.New("runtime: Run called twice")
	}
	defer r.cancelOutbox(nil)

	initialized, err := r.initialize(ctx)
	defer r.cleanup(initialized)
	if err != nil {
		r.closeSources() // never started: nothing to settle
		if ctx.Err() != nil {
			return nil // a shutdown requested during start-up is not a failure
		}
		return err
	}

	var senders sync.WaitGroup
	r.workers.Add(r.cfg.Workers)
	for range r.cfg.Workers {
		go r.runWorker()
	}
	for _, tr := range r.transports {
		for range r.cfg.ResultSenders {
			senders.Go(func() { tr.outbox.send(r.outboxCtx) })
		}
	}
	r.initialized.Store(true)

	startErr := r.start(ctx)
	heartbeatsCtx, stopHeartbeats := context.WithCancel(context.WithoutCancel(ctx))
	var heartbeats sync.WaitGroup
	if startErr == nil && ctx.Err() == nil {
		suspects := r.watchRegistrations(heartbeatsCtx, &heartbeats)
		heartbeats.Go(func() { r.heartbeatLoop(heartbeatsCtx, suspects) })
		r.log.Info("runtime started", slog.Int("executor_types", len(r.executors)),
			slog.Int("workers", r.cfg.Workers), slog.Int("queue_size", r.cfg.QueueSize))
		<-ctx.Done()
	}
	r.stop(&senders)
	r.closeSources()
	stopHeartbeats()
	heartbeats.Wait()
	r.unregisterAll()
	return startErr
}

// initialize runs the Initialize hooks in order, returning those that
// succeeded so that their Cleanup runs even if a later one fails.
func (r *Runtime) initialize(ctx context.Context) ([]*hostedExecutor, error) {
	var done []*hostedExecutor
	for _, e := range r.executors {
		if i, ok := e.executor.(domain.Initializer); ok {
			if err := i.Initialize(ctx); err != nil {
				return done, fmt.Errorf("initialize executor type %s: %w", e.desc.Type, err)
			}
		}
		done = append(done, e)
	}
	return done, nil
}

// cleanup runs the Cleanup hooks in reverse order, once abandoned handlers
// still running have returned or CallTimeout has passed (a handler that
// never returns cannot be stopped; the log says so).
func (r *Runtime) cleanup(initialized []*hostedExecutor) {
	overranCtx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
	if !r.overran.wait(overranCtx) {
		r.log.Error("handlers abandoned at their deadline still run; cleaning up anyway")
	}
	cancel()
	for i := len(initialized) - 1; i >= 0; i-- {
		e := initialized[i]
		if c, ok := e.executor.(domain.Cleaner); ok {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
			if err := c.Cleanup(ctx); err != nil {
				r.log.Error("executor cleanup failed", slog.String("executor_type", e.desc.Type), slog.Any("error", err))
			}
			cancel()
		}
	}
}

// start registers every type, then starts every source. It returns nil
// without starting intake if ctx ends during registration.
func (r *Runtime) start(ctx context.Context) error {
	if err := r.registerAll(ctx); err != nil {
		return nil // ctx ended: a shutdown during start-up is not a failure
	}
	for _, tr := range r.transports {
		if err := tr.Source.Start(ctx, &intake{rt: r, transport: tr}); err != nil {
			if ctx.Err() != nil {
				return nil // shutdown during start-up
			}
			return fmt.Errorf("start %s task source: %w", tr.Name, err)
		}
	}
	r.intakeStarted.Store(true)
	return nil
}

// stop runs the ordered shutdown from "not ready" to "results flushed".
func (r *Runtime) stop(senders *sync.WaitGroup) {
	r.draining.Store(true)
	r.sched.beginDrain()
	r.log.Info("runtime stopping: intake closed, draining", slog.String("drain_timeout", r.cfg.DrainTimeout.String()))

	stopCtx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
	for _, tr := range r.transports {
		if err := tr.Source.Stop(stopCtx); err != nil {
			r.log.Error("stop task source", slog.String("transport", tr.Name), slog.Any("error", err))
		}
	}
	cancel()

	handedBack := r.sched.takeQueued(func(j *job) bool { return j.redeliverable })
	for _, j := range handedBack {
		r.handBack(j)
	}
	if len(handedBack) > 0 {
		r.log.Info("handed back unstarted tasks to their source", slog.Int("tasks", len(handedBack)))
	}

	drainCtx, cancel := context.WithTimeout(context.Background(), r.cfg.DrainTimeout)
	drained := r.sched.awaitIdle(drainCtx)
	cancel()
	if !drained {
		r.abandonAdmitted()
	}

	// Results still in the outboxes get FlushTimeout more; after that the
	// outbox context ends and senders give up what they hold.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), r.cfg.FlushTimeout)
	defer cancelFlush()
	stopOutboxes := context.AfterFunc(flushCtx, func() {
		r.cancelOutbox(errors.New("result flush deadline passed"))
	})
	defer stopOutboxes()

	if !r.sched.awaitIdle(flushCtx) {
		r.log.Error("tasks still held by workers after the flush deadline")
	}
	gaveUp := errors.New("executor stopped before the task could be answered")
	for _, j := range r.sched.close() {
		r.giveUp(j, gaveUp)
	}
	if !waitGroupWithin(&r.workers, flushCtx) {
		r.log.Error("workers did not stop before the flush deadline; a handler or hook ignores its context")
	}
	for _, tr := range r.transports {
		tr.outbox.seal()
	}
	senders.Wait()
	// A worker released by the flush deadline may have queued its result
	// after the senders left; it is given up like the rest.
	for _, tr := range r.transports {
		tr.outbox.giveUpQueued(context.Cause(r.outboxCtx))
	}
	r.log.Info("runtime drained",
		slog.Int64("results_delivered", r.delivered.Load()),
		slog.Int64("results_undelivered", r.undelivered.Load()),
		slog.Int64("results_dead_lettered", r.deadLettered.Load()))
}

// closeSources closes every source (ports.TaskSource.Close). Run calls it
// once stop has settled every delivery or given up at the flush deadline: a
// source honours Settle until Close, so no earlier moment is safe, and no
// later one is useful (a Kafka source holds partitions that the other
// replicas could read meanwhile). A Settle that still comes afterwards, from
// a worker that outlived the flush deadline, is not honoured: the task stays
// the engine's or broker's, as the port says.
func (r *Runtime) closeSources() {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
	defer cancel()
	for _, tr := range r.transports {
		if err := tr.Source.Close(ctx); err != nil {
			r.log.Error("close task source", slog.String("transport", tr.Name), slog.Any("error", err))
		}
	}
}

// abandonAdmitted ends what the drain deadline left: running handlers are
// cancelled (SHUTDOWN, retryable) and tasks not yet running are answered
// SHUTDOWN without running.
func (r *Runtime) abandonAdmitted() {
	cause := &domain.Error{Code: domain.CodeShutdown, Message: "executor shut down before the task finished", Retryable: true}
	queued, err := r.tasks.shutDown(cause)
	r.log.Warn("drain deadline passed: cancelling running tasks and answering queued ones SHUTDOWN",
		slog.Int("queued", queued))
	r.lifecycleBug(err)
}

// handBack gives an unstarted job back to its source without a result.
func (r *Runtime) handBack(j *job) { r.giveUp(j, nil) }

// giveUp settles a job that will get no delivered result with an error
// wrapping ErrHandedBack (and cause, when given): a redelivering source
// delivers it again, and the engine reassigns it otherwise.
func (r *Runtime) giveUp(j *job, cause error) {
	settles, err := r.tasks.settle(j, nil)
	if err != nil {
		r.lifecycleBug(err)
		return
	}
	err = domain.ErrHandedBack
	if cause != nil {
		err = fmt.Errorf("%w: %v", domain.ErrHandedBack, cause)
	}
	if j.spans != nil {
		j.spans.settled(err)
	}
	if cause != nil {
		r.undelivered.Add(1)
		r.cfg.Observer.ResultsUndelivered(j.transport.Name, 1)
		r.taskLogger(j).Error("task given up at shutdown", slog.Any("error", cause))
	}
	for _, s := range settles {
		if s != nil {
			s(err)
		}
	}
}

// answerStalled answers the tasks waiting for e when all its slots are held
// by handlers that ignored their deadline: they could not start until one
// returns, which may be never, and waiting they would fill the shared queue
// and stop every other type. They are answered FAILED HANDLERS_STALLED,
// retryable, and so is every task of e offered while it stays stalled (see
// Offer).
func (r *Runtime) answerStalled(e *hostedExecutor) {
	stalled, queued, err := r.tasks.answerStalled(e.lane, func(j *job) *domain.Result { return stalledAnswer(j, e) })
	if stalled {
		r.log.Warn("every slot of the executor type is held by a handler that ignored its deadline; its tasks are answered HANDLERS_STALLED until one returns",
			slog.String("executor_type", e.desc.Type), slog.Int("queued", queued))
	}
	r.lifecycleBug(err)
}

// stalledAnswer is the answer to a task of a stalled executor type.
func stalledAnswer(j *job, e *hostedExecutor) *domain.Result {
	res := failedResult(j.task, &domain.ErrorInfo{Code: domain.CodeHandlersStalled, Retryable: true,
		Message: fmt.Sprintf("every one of the %d slots of executor type %s is held by a handler that ignored its deadline; run the task again later or elsewhere",
			e.desc.MaxConcurrentTasks, e.desc.Type)})
	res.ExecutorID = e.reg.ExecutorID
	return &res
}

// handlerWaits counts goroutines waiting for abandoned handlers. Unlike a
// sync.WaitGroup, it may be added to while someone waits.
type handlerWaits struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed and replaced when n drops to zero
}

func (w *handlerWaits) add() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.idle == nil {
		w.idle = make(chan struct{})
	}
	w.n++
}

func (w *handlerWaits) done() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n--
	if w.n == 0 {
		close(w.idle)
		w.idle = make(chan struct{})
	}
}

// wait reports whether n dropped to zero before ctx ended.
func (w *handlerWaits) wait(ctx context.Context) bool {
	for {
		w.mu.Lock()
		n, idle := w.n, w.idle
		w.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return false
		}
	}
}

// settleAll is the outboxes' done, called once per result when its
// delivery ends, a batch at a time: acknowledged (err nil), dead-lettered
// (err wraps ErrUndeliverable) or given up. It settles the tasks'
// deliveries and, on success, remembers the results for duplicates.
func (r *Runtime) settleAll(batch []outboxItem, err error) {
	r.lifecycleBug(r.tasks.settleItems(batch, err == nil))
	settleErr := err
	switch {
	case err == nil:
	case errors.Is(err, domain.ErrUndeliverable): // logged and counted by the outbox
	default:
		settleErr = fmt.Errorf("%w: result not acknowledged: %v", domain.ErrHandedBack, err)
	}
	for i := range batch {
		it := &batch[i]
		if it.settles == nil {
			continue // not settled: a lifecycle bug, logged above
		}
		if s := it.job.spans; s != nil {
			s.settled(err)
		}
		switch {
		case err == nil:
			r.delivered.Add(1)
		case errors.Is(err, domain.ErrUndeliverable):
			r.deadLettered.Add(1)
		default:
			r.undelivered.Add(1)
			r.cfg.Observer.ResultsUndelivered(it.job.transport.Name, 1)
			r.taskLogger(it.job).Error("result not delivered", slog.String("status", string(it.result.Status)), slog.Any("error", err))
		}
		for _, s := range it.settles {
			if s != nil {
				s(settleErr)
			}
		}
		it.settles = nil
	}
}

// lifecycleBug logs an illegal lifecycle transition, if err is one or more:
// a bug in the runtime, which left the task as it was rather than corrupt it.
func (r *Runtime) lifecycleBug(err error) {
	if err != nil {
		r.log.Error("task lifecycle: illegal transition refused (a bug in the runtime)", slog.Any("error", err))
	}
}

// logStackBytes bounds the stack trace a "task finished" line carries.
const logStackBytes = 1 << 10

func (r *Runtime) logResult(j *job, res domain.Result) {
	level := slog.LevelDebug
	if res.Error != nil {
		level = slog.LevelInfo
	}
	if !r.log.Enabled(context.Background(), level) {
		return // building the task's logger costs more than the rest of the hot path
	}
	attrs := []any{slog.String("status", string(res.Status)), durationMS(res.Duration)}
	if res.Error != nil {
		attrs = append(attrs, slog.String("code", res.Error.Code), slog.String("error", res.Error.Message))
		if res.Error.StackTrace != "" {
			// The whole stack goes to the engine in the result; the log keeps
			// its top, where the handler panicked, so that an operator
			// reading only this log can find the fault.
			attrs = append(attrs, slog.String("stack", domain.Clip(res.Error.StackTrace, logStackBytes)))
		}
	}
	r.taskLogger(j).Log(context.Background(), level, "task finished", attrs...)
}

func (r *Runtime) taskLogger(j *job) *slog.Logger {
	executorType := ""
	if j.exec != nil {
		executorType = j.exec.desc.Type
	}
	return r.log.With(slog.String("run_id", j.task.RunID), slog.String("node_id", j.task.NodeID),
		slog.String("task_id", j.id), slog.Int("attempt", j.task.Attempt),
		slog.String("executor_type", executorType), slog.String("transport", j.transport.Name))
}

// Started reports nil once the runtime has finished its own start-up: the
// executors' Initialize hooks have returned and the workers run. It never
// depends on the engine (registration is Ready's), so that an orchestrator's
// startup probe restarts a process stuck in its own start-up, never one
// waiting for an engine that is away.
func (r *Runtime) Started() error {
	if !r.initialized.Load() {
		return errors.New("starting: running the executors' Initialize hooks")
	}
	return nil
}

// Ready reports nil when the runtime should receive tasks: every type
// registered, intake started, every source connected, not draining. An
// error says what is missing, with the last registration failure.
func (r *Runtime) Ready() error {
	if r.draining.Load() {
		return errors.New("draining")
	}
	for _, e := range r.executors {
		if !e.registered.Load() {
			if last := e.registerErr.Load(); last != nil {
				return fmt.Errorf("executor %s is not registered with the engine: %w", e.reg.ExecutorID, *last)
			}
			return fmt.Errorf("executor %s is not registered with the engine yet", e.reg.ExecutorID)
		}
	}
	if !r.intakeStarted.Load() {
		return errors.New("starting: task intake not started")
	}
	for _, tr := range r.transports {
		if h, ok := tr.Source.(ports.HealthReporter); ok {
			if err := h.Healthy(); err != nil {
				return fmt.Errorf("%s task source: %w", tr.Name, err)
			}
		}
	}
	return nil
}

// Stats is a snapshot of the runtime's counters.
type Stats struct {
	// Admitted is the number of tasks queued or running.
	Admitted int
	// Running is the number of handlers running, by executor type.
	Running map[string]int
	// Completed and Failed count finished tasks by executor type.
	Completed, Failed map[string]int
	// Delivered, Undelivered and DeadLettered count results acknowledged,
	// given up at shutdown, and refused for good in every form.
	Delivered, Undelivered, DeadLettered int
	// DeliveryRetries counts failed Deliver calls that were retried.
	DeliveryRetries int
	// Types holds each executor type's slots, queue and registration, for
	// the scaling signal and the alerts, by executor type.
	Types map[string]domain.TypeLoad
	// Outbox counts the results not yet acknowledged by the engine or
	// broker (queued or being delivered), by transport.
	Outbox map[string]int
}

// Stats returns the runtime's counters now.
func (r *Runtime) Stats() Stats {
	s := Stats{
		Admitted:     r.sched.limit - r.sched.free(),
		Running:      make(map[string]int),
		Completed:    make(map[string]int),
		Failed:       make(map[string]int),
		Delivered:    int(r.delivered.Load()),
		Undelivered:  int(r.undelivered.Load()),
		DeadLettered: int(r.deadLettered.Load()),
		Types:        make(map[string]domain.TypeLoad, len(r.executors)),
		Outbox:       make(map[string]int, len(r.transports)),
	}
	for _, e := range r.executors {
		inUse, limit, queued, oldestAge := r.sched.laneLoad(e.lane)
		load := domain.TypeLoad{Slots: e.desc.MaxConcurrentTasks, Limit: limit, SlotsInUse: inUse, Queued: queued,
			OldestQueued: oldestAge, Registered: e.registered.Load()}
		if e.rate != nil {
			load.RateLimit = e.rate.limit.PerSecond
		}
		s.Types[e.desc.Type] = load
		s.Running[e.desc.Type] = int(e.running.Load())
		s.Completed[e.desc.Type] = int(e.completed.Load())
		s.Failed[e.desc.Type] = int(e.failed.Load())
	}
	for _, tr := range r.transports {
		s.DeliveryRetries += int(tr.outbox.retries.Load())
		s.Outbox[tr.Name] = tr.outbox.pending()
	}
	return s
}

func waitGroupWithin(wg *sync.WaitGroup, ctx context.Context) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// durationMS logs a duration as fractional milliseconds, which log tools
// read more easily than nanoseconds.
func durationMS(d time.Duration) slog.Attr {
	return slog.Float64("duration_ms", float64(d.Microseconds())/1000)
}

// sinceUnixNano returns the time elapsed since a unix-nano timestamp.
func sinceUnixNano(ns int64) time.Duration { return time.Since(time.Unix(0, ns)) }
