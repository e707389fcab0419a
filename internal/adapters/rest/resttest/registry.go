package resttest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/engine/restengine"
)

// ExecutorInfo is an executor as the engine's registry knows it
// (docs/protocol.md, section 5).
type ExecutorInfo = restengine.ExecutorInfo

// Request is one request the registry received.
type Request struct {
	Method string
	// Path is the request's path, escaped as sent.
	Path string
	// ExecutorID is the executor the request is about: the {id} of the path,
	// or the executorId of a registration's body; empty for the lists.
	ExecutorID string
	// Authorization is the Authorization header as sent.
	Authorization string
	// Time is when the request arrived.
	Time time.Time
	// Ended is when the registry was done with the request (zero while it is
	// in progress), and Status what it answered: 0 when the request was never
	// answered because the client gave up or the registry stopped first.
	Ended  time.Time
	Status int
}

// Abandoned reports whether the request ended unanswered.
func (r Request) Abandoned() bool { return !r.Ended.IsZero() && r.Status == 0 }

// Option configures a Registry at Start.
type Option func(*Registry)

// GamelanMode makes heartbeats from executors the registry does not know
// succeed (200, not recorded), as the Gamelan engine's do: only GET
// /api/v1/executors/{id} then reveals that the executor was forgotten.
func GamelanMode() Option {
	return func(r *Registry) { r.gamelan = true }
}

// WithAuth verifies every request to a route of the registry: verify
// receives the token of the request's "Authorization: Bearer <token>"
// header (empty when there is none or it is not a bearer token), and an
// error refuses the request with 401.
func WithAuth(verify func(token string) error) Option {
	return func(r *Registry) { r.verify = verify }
}

// WithHealthyWithin sets how recently an executor must have registered or
// heartbeated to be listed by GET /api/v1/executors/healthy (60s if not
// given).
func WithHealthyWithin(d time.Duration) Option {
	return func(r *Registry) { r.healthyWithin = d }
}

// Registry is the engine's REST executor registry for tests. See the package
// documentation for what it serves. Create it with Start.
type Registry struct {
	gamelan       bool
	verify        func(token string) error
	healthyWithin time.Duration
	mux           *http.ServeMux

	// lifecycle serialises Stop, Restart and Close.
	lifecycle sync.Mutex
	server    *http.Server
	served    chan struct{} // closed when Serve has returned
	addr      string
	closed    bool

	mu sync.Mutex
	// changed is closed and replaced on every change, to wake waiters.
	changed chan struct{}
	// stopping is closed by Stop to release held requests and refuse late
	// ones; each (re)start has its own.
	stopping chan struct{}
	// active counts the handlers running; Stop waits until it is zero.
	active int

	executors     map[string]ExecutorInfo
	registerCalls map[string]int
	heartbeats    map[string][]time.Time // accepted heartbeats by id
	lastSeen      map[string]time.Time   // last registration or heartbeat by id
	requests      []Request
	refused       int

	failNext       int
	failStatus     int
	failBody       string
	failHeartbeats int // status answered to every heartbeat; 0 when off
	hang           time.Duration
}

// Start serves a new registry on a free port of 127.0.0.1. It registers
// Close as a cleanup of t and fails t when it cannot listen.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	r := &Registry{
		healthyWithin: time.Minute,
		changed:       make(chan struct{}),
		executors:     make(map[string]ExecutorInfo),
		registerCalls: make(map[string]int),
		heartbeats:    make(map[string][]time.Time),
		lastSeen:      make(map[string]time.Time),
	}
	for _, o := range opts {
		o(r)
	}
	r.mux = r.routes()
	t.Cleanup(r.Close)
	if err := r.serve("127.0.0.1:0"); err != nil {
		t.Fatalf("resttest: start registry: %v", err)
	}
	return r
}

// serve listens on addr and serves until Stop.
func (r *Registry) serve(addr string) error {
	r.lifecycle.Lock()
	defer r.lifecycle.Unlock()
	if r.closed {
		return errors.New("registry closed")
	}
	if r.server != nil {
		return fmt.Errorf("already serving at %s", r.addr)
	}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	stopping := make(chan struct{})
	r.mu.Lock()
	r.stopping = stopping
	r.mu.Unlock()
	server := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.handle(w, req, stopping) }),
		ReadHeaderTimeout: 5 * time.Second,
	}
	served := make(chan struct{})
	r.server, r.served, r.addr = server, served, listener.Addr().String()
	go func() {
		defer close(served)
		_ = server.Serve(listener)
	}()
	return nil
}

// Addr is the host:port the registry serves on, or served on last.
func (r *Registry) Addr() string {
	r.lifecycle.Lock()
	defer r.lifecycle.Unlock()
	return r.addr
}

// URL is the registry's base URL, http://127.0.0.1:port: an executor's
// GAMELAN_EXECUTOR_ENGINE_URL.
func (r *Registry) URL() string { return "http://" + r.Addr() }

// Stop stops serving, hard: the listener and every connection close, held
// requests are released unanswered, and Stop returns once every handler has
// returned. The state is kept. Stop is idempotent.
func (r *Registry) Stop() {
	r.lifecycle.Lock()
	defer r.lifecycle.Unlock()
	if r.server == nil {
		return
	}
	r.mu.Lock()
	close(r.stopping)
	r.mu.Unlock()
	_ = r.server.Close()
	<-r.served
	r.server, r.served = nil, nil
	// A connection accepted just before Close may still be dispatching a
	// request; its handler sees stopping closed and returns at once.
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.active > 0 {
		changed := r.changed
		r.mu.Unlock()
		<-changed
		r.mu.Lock()
	}
}

// Restart serves again on the address of the last Start, with the state
// intact, after Stop. It fails t when the registry is serving or the port
// cannot be bound again.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	if err := r.serve(r.Addr()); err != nil {
		t.Fatalf("resttest: restart registry at %s: %v", r.Addr(), err)
	}
}

// Close stops serving for good. It is idempotent.
func (r *Registry) Close() {
	r.Stop()
	r.lifecycle.Lock()
	r.closed = true
	r.lifecycle.Unlock()
}

// FailNext answers the next n requests, of any kind, with status and a
// short JSON body naming the fault. It replaces a FailNext still in force;
// n <= 0 clears it.
func (r *Registry) FailNext(n, status int) {
	r.FailNextWithBody(n, status, fmt.Sprintf(`{"error":"resttest: injected failure","status":%d}`, status))
}

// FailNextWithBody is FailNext with the body of the answers.
func (r *Registry) FailNextWithBody(n, status int, body string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failNext, r.failStatus, r.failBody = max(n, 0), status, body
}

// FailHeartbeats answers every heartbeat with status, whether the registry
// knows the executor or not, until FailHeartbeats(0).
func (r *Registry) FailHeartbeats(status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failHeartbeats = status
}

// Hang holds each request that arrives from now on for d before handling
// it, or until its client gives up or the registry stops; Hang(0) ends it
// for the requests that arrive afterwards.
func (r *Registry) Hang(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hang = max(d, 0)
}

// Forget drops the registration of executorID without the executor asking,
// as an engine that restarted or expired it would. Its records are kept.
func (r *Registry) Forget(executorID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.executors, executorID)
	r.notifyLocked()
}

// Executor returns the registration of executorID, and whether there is one.
func (r *Registry) Executor(executorID string) (ExecutorInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	info, ok := r.executors[executorID]
	return info.Clone(), ok
}

// Executors returns every registration, ordered by executor id.
func (r *Registry) Executors() []ExecutorInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.executorsLocked(func(string) bool { return true })
}

func (r *Registry) executorsLocked(keep func(id string) bool) []ExecutorInfo {
	out := make([]ExecutorInfo, 0, len(r.executors))
	for _, id := range slices.Sorted(maps.Keys(r.executors)) {
		if keep(id) {
			out = append(out, r.executors[id].Clone())
		}
	}
	return out
}

// RegisterCalls returns how many registrations of executorID the registry
// stored (answered 200), re-registrations included.
func (r *Registry) RegisterCalls(executorID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registerCalls[executorID]
}

// Heartbeats returns the arrival times of the heartbeats of executorID that
// the registry accepted while it knew the executor, in order.
func (r *Registry) Heartbeats(executorID string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.heartbeats[executorID])
}

// Requests returns every request received so far, in arrival order.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// Refused returns how many requests WithAuth's hook refused.
func (r *Registry) Refused() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refused
}

// Changed returns a channel that is closed at the next change of the
// registry's state or records.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// WaitFor waits until cond returns true, evaluating it now and after every
// change, or returns ctx's cause. cond runs without the registry's lock and
// may call its getters.
func (r *Registry) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		changed := r.Changed()
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

// notifyLocked wakes every waiter. r.mu must be held.
func (r *Registry) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}
