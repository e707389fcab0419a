package app

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// scheduler admits jobs up to a global bound and hands them to workers,
// respecting each executor type's concurrency limit. Jobs of a type at its
// limit wait in that type's lane while other lanes proceed; jobs that need no
// handler (answers decided at intake, cancellations) use the immediate lane.
//
// Workers block in next on a sync.Cond, woken one at a time (see wakeOne);
// sources waiting for room block on roomFreed, a channel closed whenever a
// job is released (made only when someone waits: most releases have no one
// to tell).
//
// Its lock guards where jobs wait and which lane slots they hold, a concern
// of its own: what happened to a task is its lifecycle stage, guarded by the
// task table's lock (lifecycle.go), which is taken first when both are.
type scheduler struct {
	mu        sync.Mutex
	workReady *sync.Cond
	limit     int // workers + queue size
	// admitted counts the jobs admitted and not yet released. It is written
	// under mu, and read without it by free and awaitRoom, which sources
	// call for every task.
	admitted  atomic.Int64
	immediate jobQueue
	lanes     []*lane
	nextLane  int // round-robin start, so no lane starves another
	closed    bool
	// idle counts the workers waiting in next; waking reports that one of
	// them has been woken and has not looked for a job yet (see wakeOne).
	idle   int
	waking bool
	// roomFreed, when not nil, is closed at the next release (see roomWaiter).
	roomFreed chan struct{}
	// draining is closed when the runtime starts to stop: AwaitCapacity
	// callers return ErrDraining instead of waiting for room.
	draining chan struct{}
}

// lane is one executor type's queue and running count.
type lane struct {
	queue   jobQueue
	running int
	// max is the running limit: the type's MaxConcurrentTasks (ceiling),
	// or, when its concurrency adapts, the limit adaptive sets, which may
	// change at every release (see releaseLocked).
	max     int
	ceiling int
	// adaptive is the controller of the type's limit; nil when the limit
	// is fixed.
	adaptive *adaptiveLimit
	// overran counts running slots held by handlers abandoned at their
	// deadline; when it reaches ceiling the lane is stalled (see stalled). It
	// is written under mu, and read without it by stalled, which every
	// offer asks.
	overran atomic.Int64
}

func newScheduler(limit int) *scheduler {
	s := &scheduler{limit: limit, draining: make(chan struct{})}
	s.workReady = sync.NewCond(&s.mu)
	return s
}

// newLane adds a lane for an executor type allowed max concurrent jobs.
func (s *scheduler) newLane(max int) *lane {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &lane{max: max, ceiling: max}
	s.lanes = append(s.lanes, l)
	return l
}

// adapt hands l's limit to the controller a, from a's initial limit on.
func (s *scheduler) adapt(l *lane, a *adaptiveLimit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.adaptive, l.max = a, a.limit
}

// hasRoom reports whether a job of l may start now. Callers hold mu.
//
// Handlers abandoned at their deadline hold their slots of the type's
// MaxConcurrentTasks until they return, but not of an adaptive limit:
// otherwise a limit the abandoned samples cut to 1 would stop the type,
// with no sample left to raise it again.
func (l *lane) hasRoom() bool {
	if l.running < l.max {
		return true
	}
	return l.max < l.ceiling && l.running < l.ceiling && l.running-int(l.overran.Load()) < l.max
}

// admit takes j if there is room; it never blocks.
func (s *scheduler) admit(j *job) bool {
	// Read before the lock, so that the clock is not read while holding it.
	// Only jobs of a lane wait for a slot; the immediate lane's start at once.
	var now int64
	if j.lane != nil {
		now = monotonicNow()
	}
	s.mu.Lock()
	if s.closed || s.admitted.Load() >= int64(s.limit) {
		s.mu.Unlock()
		return false
	}
	s.admitted.Add(1)
	// A job of a lane at its limit waits for a release of the lane, whose
	// worker takes it; any other may start at once.
	startable := true
	if j.lane == nil {
		s.immediate.push(j)
	} else {
		j.queuedAt = now
		j.lane.queue.push(j)
		startable = j.lane.hasRoom()
	}
	wake := startable && s.wakeOne()
	s.mu.Unlock()
	if wake {
		// Signalled after unlocking, so that the worker woken does not
		// wait for the lock at once. No wake-up is lost: a worker that
		// found no job is already waiting (Wait enlists before unlocking).
		s.workReady.Signal()
	}
	return true
}

// wakeOne reports whether the caller should wake a waiting worker for a job
// that may start, and if so counts it as waking. At most one worker is
// woken at a time: it wakes the next (in next) if more jobs may start. A
// wake-up per job would mostly be lost, since workers still running take
// most jobs before the worker woken runs, and every lost one costs a
// goroutine switch and a taking of the lock. Callers hold mu.
func (s *scheduler) wakeOne() bool {
	if s.idle == 0 || s.waking {
		return false
	}
	s.waking = true
	return true
}

// startable reports whether a job waits that a worker may start now.
// Callers hold mu.
func (s *scheduler) startable() bool {
	if s.immediate.len() > 0 {
		return true
	}
	for _, l := range s.lanes {
		if l.queue.len() > 0 && l.hasRoom() {
			return true
		}
	}
	return false
}

// next releases done, the job the worker ran last (nil for none), with
// the sample of its handler, as release does, then blocks until a job may
// run and returns it, or returns nil once the scheduler is closed.
// Releasing and taking under one lock spares each task a taking of it.
func (s *scheduler) next(done *job, sampled sample) *job {
	s.mu.Lock()
	if done != nil {
		s.releaseLocked(done, false, sampled)
	}
	for {
		if s.closed {
			s.mu.Unlock()
			return nil
		}
		if j := s.pick(); j != nil {
			// Pass the wake-up on while jobs that may start remain.
			wake := s.startable() && s.wakeOne()
			s.mu.Unlock()
			if wake {
				s.workReady.Signal()
			}
			return j
		}
		s.idle++
		s.workReady.Wait()
		s.idle--
		s.waking = false // the one woken, or every one at close: all look now
	}
}

func (s *scheduler) pick() *job {
	if s.immediate.len() > 0 {
		return s.immediate.pop()
	}
	for i := range s.lanes {
		l := s.lanes[(s.nextLane+i)%len(s.lanes)]
		if l.queue.len() == 0 || !l.hasRoom() {
			continue
		}
		j := l.queue.pop()
		l.running++
		s.nextLane = (s.nextLane + i + 1) % len(s.lanes)
		return j
	}
	return nil
}

// release frees the slot of j, which next returned, and its lane's if it
// was taken from one (the immediate lane's jobs have no lane), unless its
// handler overran: releaseLane frees that slot when the handler returns.
//
// sampled, when ok, is the handler's sample for its lane's adaptive limit.
//
// It wakes no worker, unless an adaptive limit rose: the one job a freed
// lane slot lets start is taken by the worker releasing it, which calls
// next at once; and a slot of an overrunning handler frees no lane slot.
func (s *scheduler) release(j *job, overran bool, sampled sample) {
	s.mu.Lock()
	limit := s.limitOf(j)
	s.releaseLocked(j, overran, sampled)
	wake := s.limitOf(j) > limit && s.startable() && s.wakeOne()
	s.mu.Unlock()
	if wake {
		s.workReady.Signal()
	}
	if j.lane != nil {
		j.lane.adaptive.logChange()
	}
}

// limitOf returns the running limit of j's lane, 0 for the immediate lane.
// Callers hold mu.
func (s *scheduler) limitOf(j *job) int {
	if j.lane == nil {
		return 0
	}
	return j.lane.max
}

// releaseLocked is release, for callers holding mu. A sample of an adaptive
// lane goes to its controller, which may move the lane's limit: a lower one
// stops no running handler, only fewer start.
func (s *scheduler) releaseLocked(j *job, overran bool, sampled sample) {
	if l := j.lane; l != nil {
		if l.adaptive != nil && sampled.ok {
			l.max = l.adaptive.observe(sampled, l.running-int(l.overran.Load()), sampled.at)
		}
		if overran {
			l.overran.Add(1) // its slot is freed by releaseLane
		} else {
			l.running--
		}
	}
	s.admitted.Add(-1)
	s.freeRoom()
}

// roomWaiter returns a channel closed when room is next freed. Callers
// hold mu.
func (s *scheduler) roomWaiter() <-chan struct{} {
	if s.roomFreed == nil {
		s.roomFreed = make(chan struct{})
	}
	return s.roomFreed
}

// freeRoom wakes those waiting for room. Callers hold mu.
func (s *scheduler) freeRoom() {
	if s.roomFreed != nil {
		close(s.roomFreed)
		s.roomFreed = nil
	}
}

// releaseLane frees one running slot of l, held by a handler that overran:
// the goroutine that ran it does not take another job, so a worker is woken.
func (s *scheduler) releaseLane(l *lane) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.running--
	l.overran.Add(-1)
	s.workReady.Signal()
}

// stalled reports whether every slot of l is held by a handler abandoned
// at its deadline: no task of l can start until one of them returns.
func (s *scheduler) stalled(l *lane) bool { return l.overran.Load() >= int64(l.ceiling) }

// queuedIn returns the jobs waiting in l.
func (s *scheduler) queuedIn(l *lane) []*job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*job(nil), l.queue.jobs()...)
}

// laneLoad returns the slots of l in use (handlers abandoned at their
// deadline that still run hold theirs), its running limit, the jobs
// waiting in it, and how long the oldest of them has waited (zero when
// none). Lanes are queues, oldest first, so the oldest is at the head.
func (s *scheduler) laneLoad(l *lane) (inUse, limit, queued int, oldestAge time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	waiting := l.queue.jobs()
	if len(waiting) > 0 {
		oldestAge = time.Duration(monotonicNow() - waiting[0].queuedAt)
	}
	return l.running, l.max, len(waiting), oldestAge
}

// clockEpoch is when the process started, for monotonicNow.
var clockEpoch = time.Now()

// monotonicNow returns the nanoseconds since clockEpoch on the monotonic
// clock: a time that fits a job in 8 bytes (a time.Time takes 24), and that
// a change of the wall clock does not move.
func monotonicNow() int64 { return int64(time.Since(clockEpoch)) }

// expedite moves a queued job to the immediate lane (its answer is already
// decided, for example a cancellation). It reports false if a worker has
// already taken the job.
func (s *scheduler) expedite(j *job) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.lane == nil {
		return false
	}
	if !j.lane.queue.remove(j) {
		return false
	}
	j.lane = nil
	s.immediate.push(j)
	s.workReady.Signal()
	return true
}

// takeQueued removes and returns the queued, unstarted jobs for which keep
// reports true, releasing their slots.
func (s *scheduler) takeQueued(keep func(*job) bool) []*job {
	s.mu.Lock()
	defer s.mu.Unlock()
	var taken []*job
	for _, l := range s.lanes {
		taken = append(taken, l.queue.removeIf(keep)...)
	}
	if len(taken) > 0 {
		s.admitted.Add(int64(-len(taken)))
		s.freeRoom()
	}
	return taken
}

// queued returns the jobs waiting in lanes, in no particular order.
func (s *scheduler) queued() []*job {
	s.mu.Lock()
	defer s.mu.Unlock()
	var jobs []*job
	for _, l := range s.lanes {
		jobs = append(jobs, l.queue.jobs()...)
	}
	return jobs
}

// free returns how many more jobs admit would take now.
func (s *scheduler) free() int { return s.limit - int(s.admitted.Load()) }

// beginDrain makes awaitRoom return ErrDraining, now and from now on.
func (s *scheduler) beginDrain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.draining:
	default:
		close(s.draining)
	}
}

// awaitRoom blocks until admit could take a job, returning how many it could
// take, ErrDraining once the runtime is stopping, or ctx's error.
func (s *scheduler) awaitRoom(ctx context.Context) (int, error) {
	for {
		select {
		case <-s.draining:
			return 0, domain.ErrDraining
		default:
		}
		if free := s.free(); free > 0 {
			return free, nil
		}
		s.mu.Lock()
		free := s.free()
		var freed <-chan struct{}
		if free <= 0 {
			freed = s.roomWaiter()
		}
		s.mu.Unlock()
		if free > 0 {
			return free, nil
		}
		select {
		case <-freed:
		case <-s.draining:
			return 0, domain.ErrDraining
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// awaitIdle blocks until no job is admitted, or ctx ends; it reports
// whether the scheduler became idle.
func (s *scheduler) awaitIdle(ctx context.Context) bool {
	for {
		s.mu.Lock()
		admitted := s.admitted.Load()
		var freed <-chan struct{}
		if admitted > 0 {
			freed = s.roomWaiter()
		}
		s.mu.Unlock()
		if admitted == 0 {
			return true
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		}
	}
}

// close makes next return nil and admit refuse, and returns the jobs still
// queued (in any lane), releasing their slots: the caller settles them.
func (s *scheduler) close() []*job {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	leftovers := s.immediate.removeIf(func(*job) bool { return true })
	for _, l := range s.lanes {
		leftovers = append(leftovers, l.queue.removeIf(func(*job) bool { return true })...)
	}
	s.admitted.Add(int64(-len(leftovers)))
	s.freeRoom()
	s.workReady.Broadcast()
	return leftovers
}

// jobQueue is a queue of jobs, oldest first, that reuses its array: taking
// from it moves head, and an emptied queue starts again at the front, so
// that a queue that empties and fills (a lane at ordinary load) allocates
// nothing.
type jobQueue struct {
	list []*job // list[head:] wait
	head int
}

func (q *jobQueue) len() int { return len(q.list) - q.head }

// jobs returns the waiting jobs; the slice is the queue's own.
func (q *jobQueue) jobs() []*job { return q.list[q.head:] }

func (q *jobQueue) push(j *job) {
	if waiting := q.len(); len(q.list) == cap(q.list) && q.head > 0 && q.head >= waiting {
		// Slide the waiting jobs to the front rather than grow the array:
		// at least half of it has been taken.
		copy(q.list, q.list[q.head:])
		clear(q.list[waiting:])
		q.list, q.head = q.list[:waiting], 0
	}
	q.list = append(q.list, j)
}

// pop takes the oldest job; the queue must not be empty.
func (q *jobQueue) pop() *job {
	j := q.list[q.head]
	q.list[q.head] = nil
	q.head++
	if q.head == len(q.list) {
		q.list, q.head = q.list[:0], 0
	}
	return j
}

// remove takes j out of the queue, reporting whether it was there.
func (q *jobQueue) remove(j *job) bool {
	waiting := q.jobs()
	for i, candidate := range waiting {
		if candidate == j {
			copy(waiting[i:], waiting[i+1:])
			q.list[len(q.list)-1] = nil
			q.list = q.list[:len(q.list)-1]
			if q.len() == 0 {
				q.list, q.head = q.list[:0], 0
			}
			return true
		}
	}
	return false
}

// removeIf takes out of the queue the jobs for which take reports true and
// returns them, keeping the others in order.
func (q *jobQueue) removeIf(take func(*job) bool) []*job {
	var taken []*job
	kept := q.list[:0]
	for _, j := range q.jobs() {
		if take(j) {
			taken = append(taken, j)
		} else {
			kept = append(kept, j)
		}
	}
	clear(q.list[len(kept):])
	q.list, q.head = kept, 0
	return taken
}
