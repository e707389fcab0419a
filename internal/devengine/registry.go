package devengine

import (
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// ErrUnknownExecutor is returned for calls about an executor the registry
// does not know (a heartbeat after expiry): the executor should register
// again.
var ErrUnknownExecutor = errors.New("executor not registered")

// Executor is the registry's view of one executor.
type Executor struct {
	ID                 string            `json:"executorId"`
	Type               string            `json:"executorType"`
	CommunicationType  string            `json:"communicationType"`
	Endpoint           string            `json:"endpoint"`
	SupportedNodeTypes []string          `json:"supportedNodeTypes"`
	MaxConcurrent      int               `json:"maxConcurrentTasks"`
	Metadata           map[string]string `json:"metadata"`
	// Via is how it registered: grpc, http or kafka.
	Via           string    `json:"registeredVia"`
	RegisteredAt  time.Time `json:"registeredAt"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	Healthy       bool      `json:"healthy"`
	// Draining is set by a heartbeat with status DRAINING (the executor is
	// shutting down) and cleared by any other status or a registration.
	Draining bool `json:"draining"`
	// Assigned is how many tasks the engine has given it and not had answered.
	Assigned int `json:"assignedTasks"`
	// ReportedLoad is the task count of its last heartbeat.
	ReportedLoad int `json:"reportedLoad"`
	// ReportedLoadShare is the load, 0 to 1, of its last heartbeat (the
	// executor service's heartbeat field 7, or health.load on Kafka).
	ReportedLoadShare float64 `json:"reportedLoadShare"`
}

// supports reports whether the executor takes tasks of this executor type
// or node type.
func (e *Executor) supports(executorType, nodeType string) bool {
	if executorType != "" {
		return e.Type == executorType
	}
	return nodeType == e.Type || slices.Contains(e.SupportedNodeTypes, nodeType)
}

// takesTasks reports whether new tasks may go to the executor. A draining
// Kafka executor still takes them: its tasks go to the consumer group of
// its replicas, which a draining replica has already left.
func (e *Executor) takesTasks() bool {
	return e.Healthy && (!e.Draining || e.CommunicationType == "KAFKA")
}

// registry holds the executors. All methods are safe for concurrent use.
type registry struct {
	mu        sync.Mutex
	executors map[string]*Executor
	expiry    time.Duration
	now       func() time.Time
}

func newRegistry(expiry time.Duration, now func() time.Time) *registry {
	return &registry{executors: make(map[string]*Executor), expiry: expiry, now: now}
}

// register adds or refreshes an executor; what the engine counted against
// it (Assigned) survives a re-registration.
func (r *registry) register(e Executor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	e.RegisteredAt, e.LastHeartbeat, e.Healthy = now, now, true
	if old, ok := r.executors[e.ID]; ok {
		e.Assigned = old.Assigned
	}
	if e.MaxConcurrent < 1 {
		e.MaxConcurrent = 1
	}
	r.executors[e.ID] = &e
}

// unregister removes an executor and reports whether it was known.
func (r *registry) unregister(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.executors[id]
	delete(r.executors, id)
	return ok
}

// heartbeat records a heartbeat; ErrUnknownExecutor when the id is unknown.
// A heartbeat without a status leaves Draining as it was.
//
// It reports whether the executor became available for tasks (it was
// unhealthy or draining and is neither now): only then has the dispatcher
// anything new to do. Most heartbeats change nothing it reads, and waking it
// for each would cost an engine with hundreds of executors a scan per
// heartbeat.
func (r *registry) heartbeat(hb domain.Heartbeat) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.executors[hb.ExecutorID]
	if !ok {
		return false, ErrUnknownExecutor
	}
	before := e.takesTasks()
	e.LastHeartbeat, e.Healthy, e.ReportedLoad = r.now(), true, hb.CurrentTasks
	e.ReportedLoadShare = hb.Load
	if hb.Status != "" {
		e.Draining = hb.Status == domain.HealthDraining
	}
	return !before && e.takesTasks(), nil
}

// get returns a copy of an executor.
func (r *registry) get(id string) (Executor, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.executors[id]
	if !ok {
		return Executor{}, false
	}
	return *e, true
}

// list returns copies of every executor, sorted by id.
func (r *registry) list() []Executor {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Executor, 0, len(r.executors))
	for _, e := range r.executors {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// expire marks executors whose last heartbeat is older than the threshold
// unhealthy, removes those older than twice the threshold, and returns the
// ids of executors that became unhealthy or were removed.
func (r *registry) expire() (lost []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for id, e := range r.executors {
		silent := now.Sub(e.LastHeartbeat)
		switch {
		case silent > 2*r.expiry:
			delete(r.executors, id)
			lost = append(lost, id)
		case silent > r.expiry && e.Healthy:
			e.Healthy = false
			lost = append(lost, id)
		}
	}
	return lost
}

// assign picks the least-loaded executor that takes tasks, supports the
// task and has room (below its max concurrent tasks, and room(executor)
// true: its open streams can take one more), counts the task against it,
// and returns a copy. ok is false when none can take it now. room is
// called with mu held.
func (r *registry) assign(executorType, nodeType string, room func(*Executor) bool) (Executor, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *Executor
	for _, e := range r.executors {
		if !e.takesTasks() || e.Assigned >= e.MaxConcurrent || !e.supports(executorType, nodeType) || !room(e) {
			continue
		}
		// Least loaded relative to capacity; ties go to the lower id.
		if best == nil || e.Assigned*best.MaxConcurrent < best.Assigned*e.MaxConcurrent ||
			(e.Assigned*best.MaxConcurrent == best.Assigned*e.MaxConcurrent && e.ID < best.ID) {
			best = e
		}
	}
	if best == nil {
		return Executor{}, false
	}
	best.Assigned++
	return *best, true
}

// release uncounts a task from an executor (answered, or taken back).
func (r *registry) release(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.executors[id]; ok && e.Assigned > 0 {
		e.Assigned--
	}
}
