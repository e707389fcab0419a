package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// The doubles below give the runtime's unit tests direct control of every
// port: offers are made synchronously, deliveries and registrations can be
// failed or blocked, and every call is recorded in one ordered event log.

// events is an ordered, concurrency-safe log of what the ports saw.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, fmt.Sprintf(format, args...))
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

func (e *events) index(s string) int {
	for i, v := range e.all() {
		if v == s {
			return i
		}
	}
	return -1
}

type fakeSource struct {
	events  *events
	name    string
	started chan struct{}
	mu      sync.Mutex
	intake  ports.Intake
	stopped bool
	health  error
}

var _ ports.TaskSource = (*fakeSource)(nil)

func newFakeSource(ev *events, name string) *fakeSource {
	return &fakeSource{events: ev, name: name, started: make(chan struct{})}
}

func (s *fakeSource) Start(_ context.Context, in ports.Intake) error {
	s.mu.Lock()
	s.intake = in
	s.mu.Unlock()
	s.events.add("start:%s", s.name)
	close(s.started)
	return nil
}

func (s *fakeSource) Stop(context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.events.add("stop:%s", s.name)
	return nil
}

func (s *fakeSource) Close(context.Context) error {
	s.events.add("close:%s", s.name)
	return nil
}

func (s *fakeSource) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

func (s *fakeSource) setHealth(err error) {
	s.mu.Lock()
	s.health = err
	s.mu.Unlock()
}

// settlement records how the runtime settled one delivery.
type settlement struct {
	done chan struct{}
	mu   sync.Mutex
	err  error
	n    int
}

func newSettlement() *settlement { return &settlement{done: make(chan struct{})} }

func (s *settlement) settle(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.err = err
	if s.n == 1 {
		close(s.done)
	}
}

// wait returns the settle error, failing the test if none came in time.
func (s *settlement) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("delivery was never settled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Equal(t, 1, s.n, "settled more than once")
	return s.err
}

func (s *settlement) settled() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// offer offers a task through the source's intake and returns its settlement.
func (s *fakeSource) offer(t *testing.T, task domain.Task, redeliverable bool) (*settlement, error) {
	t.Helper()
	s.mu.Lock()
	in := s.intake
	s.mu.Unlock()
	require.NotNil(t, in, "source not started")
	st := newSettlement()
	err := in.Offer(context.Background(), ports.Delivery{Task: &task, Settle: st.settle, Redeliverable: redeliverable})
	return st, err
}

func (s *fakeSource) mustOffer(t *testing.T, task domain.Task) *settlement {
	t.Helper()
	st, err := s.offer(t, task, false)
	require.NoError(t, err)
	return st
}

func (s *fakeSource) in() ports.Intake {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.intake
}

type fakeSink struct {
	events  *events
	mu      sync.Mutex
	results []domain.Result
	failN   int
	failAll bool
	// gate, when set, blocks Deliver until closed or ctx ends.
	gate chan struct{}
	// rejects, when set, refuses for good (domain.ErrResultRejected) every
	// batch holding a result it reports true for; batches records the size
	// of every batch offered.
	rejects    func(domain.Result) bool
	rejectWith error // what a rejection wraps: domain.ErrResultRejected if nil
	batches    []int
	entered    int // Deliver calls begun, gate or not
}

var _ ports.ResultSink = (*fakeSink)(nil)

func (s *fakeSink) Deliver(ctx context.Context, results []domain.Result) error {
	s.mu.Lock()
	gate := s.gate
	s.entered++
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, len(results))
	if s.rejects != nil {
		for _, r := range results {
			if s.rejects(r) {
				rejection := s.rejectWith
				if rejection == nil {
					rejection = domain.ErrResultRejected
				}
				return fmt.Errorf("report results: %w: message larger than the engine takes", rejection)
			}
		}
	}
	if s.failAll || s.failN > 0 {
		s.failN--
		return errors.New("engine unavailable")
	}
	for _, r := range results {
		s.results = append(s.results, r)
		s.events.add("deliver:%s", r.Key())
	}
	return nil
}

func (s *fakeSink) deliverCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entered
}

func (s *fakeSink) all() []domain.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]domain.Result(nil), s.results...)
}

// waitResults waits until the sink holds at least n results.
func (s *fakeSink) waitResults(t *testing.T, n int) []domain.Result {
	t.Helper()
	require.Eventually(t, func() bool { return len(s.all()) >= n }, 5*time.Second, time.Millisecond,
		"want %d results", n)
	return s.all()
}

func (s *fakeSink) byKey(t *testing.T, key string) domain.Result {
	t.Helper()
	var found domain.Result
	require.Eventually(t, func() bool {
		for _, r := range s.all() {
			if r.Key() == key {
				found = r
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond, "no result for %s", key)
	return found
}

type fakeControl struct {
	events     *events
	mu         sync.Mutex
	failReg    int
	failHB     bool
	heartbeats []domain.Heartbeat
	regs       map[string]domain.Registration
}

func (c *fakeControl) Register(_ context.Context, reg domain.Registration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failReg > 0 {
		c.failReg--
		c.events.add("register-failed:%s", reg.ExecutorID)
		return errors.New("engine unavailable")
	}
	if c.regs == nil {
		c.regs = make(map[string]domain.Registration)
	}
	c.regs[reg.ExecutorID] = reg
	c.events.add("register:%s", reg.ExecutorID)
	return nil
}

func (c *fakeControl) Unregister(_ context.Context, id string) error {
	c.events.add("unregister:%s", id)
	return nil
}

func (c *fakeControl) Heartbeat(_ context.Context, hb domain.Heartbeat) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heartbeats = append(c.heartbeats, hb)
	if c.failHB {
		c.events.add("heartbeat-failed:%s", hb.ExecutorID)
		return fmt.Errorf("heartbeat %s: %w", hb.ExecutorID, domain.ErrNotRegistered)
	}
	c.events.add("heartbeat:%s", hb.ExecutorID)
	return nil
}

func (c *fakeControl) setFailHeartbeats(fail bool) {
	c.mu.Lock()
	c.failHB = fail
	c.mu.Unlock()
}

func (c *fakeControl) lastHeartbeats() []domain.Heartbeat {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]domain.Heartbeat(nil), c.heartbeats...)
}

// funcExecutor is an executor whose behaviour is a function.
type funcExecutor struct {
	desc domain.Descriptor
	run  func(ctx context.Context, task *domain.Task) (*domain.Result, error)
}

func (f funcExecutor) Descriptor() domain.Descriptor { return f.desc }
func (f funcExecutor) Execute(ctx context.Context, task *domain.Task) (*domain.Result, error) {
	return f.run(ctx, task)
}

func completing(typ string, maxConcurrent int) funcExecutor {
	return funcExecutor{
		desc: domain.Descriptor{Type: typ, MaxConcurrentTasks: maxConcurrent},
		run: func(_ context.Context, task *domain.Task) (*domain.Result, error) {
			return &domain.Result{Status: domain.StatusCompleted, Output: map[string]any{"node": task.NodeID}}, nil
		},
	}
}

// gated returns an executor whose tasks block until gate is closed or their
// context ends, counting how many run at once.
func gated(typ string, maxConcurrent int, gate <-chan struct{}, running, peak *int64, mu *sync.Mutex) funcExecutor {
	return funcExecutor{
		desc: domain.Descriptor{Type: typ, MaxConcurrentTasks: maxConcurrent},
		run: func(ctx context.Context, task *domain.Task) (*domain.Result, error) {
			mu.Lock()
			*running++
			if *running > *peak {
				*peak = *running
			}
			mu.Unlock()
			defer func() { mu.Lock(); *running--; mu.Unlock() }()
			select {
			case <-gate:
				return &domain.Result{Status: domain.StatusCompleted}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
}

// harness runs a Runtime over the doubles.
type harness struct {
	rt      *app.Runtime
	events  *events
	sources map[string]*fakeSource
	sinks   map[string]*fakeSink
	control *fakeControl
	cancel  context.CancelFunc
	done    chan error
}

type hostedOn struct {
	ex        domain.Executor
	transport string
}

func testConfig() app.Config {
	return app.Config{
		Workers:            8,
		QueueSize:          16,
		DefaultTaskTimeout: 5 * time.Second,
		DrainTimeout:       5 * time.Second,
		FlushTimeout:       5 * time.Second,
		CallTimeout:        time.Second,
		HeartbeatInterval:  time.Hour,
		ReregisterInterval: -1,
		OutboxSize:         1000,
		DedupeCapacity:     10000,
		RegisterBackoff:    domain.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2},
		ResultBackoff:      domain.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2},
	}
}

// newHarness builds a runtime; executors name their transport ("t" when
// hosted through executorsOn with a single transport).
func newHarness(t *testing.T, cfg app.Config, hosted ...hostedOn) *harness {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return newHarnessLogging(t, cfg, log, hosted...)
}

// newHarnessLogging is newHarness with the runtime's logger given: timed
// tests keep a verbose run's logging from slowing what they measure.
func newHarnessLogging(t *testing.T, cfg app.Config, log *slog.Logger, hosted ...hostedOn) *harness {
	t.Helper()
	h := &harness{events: &events{}, sources: map[string]*fakeSource{}, sinks: map[string]*fakeSink{}}
	h.control = &fakeControl{events: h.events}
	var transports []app.Transport
	var hostedList []app.Hosted
	for _, ho := range hosted {
		if h.sources[ho.transport] == nil {
			h.sources[ho.transport] = newFakeSource(h.events, ho.transport)
			h.sinks[ho.transport] = &fakeSink{events: h.events}
			transports = append(transports, app.Transport{Name: ho.transport, Source: h.sources[ho.transport], Sink: h.sinks[ho.transport]})
		}
		typ := ho.ex.Descriptor().Type
		hostedList = append(hostedList, app.Hosted{
			Executor:     ho.ex,
			Registration: domain.Registration{ExecutorID: "test-" + typ, Endpoint: "127.0.0.1:1"},
			Transport:    ho.transport,
		})
	}
	rt, err := app.New(cfg, hostedList, transports, h.control, h.control, log)
	require.NoError(t, err)
	h.rt = rt
	return h
}

func on(transport string, ex domain.Executor) hostedOn { return hostedOn{ex: ex, transport: transport} }

// run starts the runtime and waits until every source has started.
func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.rt.Run(ctx) }()
	for name, s := range h.sources {
		select {
		case <-s.started:
		case err := <-h.done:
			t.Fatalf("runtime stopped before source %s started: %v", name, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("source %s never started", name)
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Error("runtime did not stop")
		}
	})
}

// stop cancels Run and waits for it to return.
func (h *harness) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // let Cleanup see it too
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("runtime did not stop")
		return nil
	}
}

func task(run, node string, attempt int) domain.Task {
	return domain.Task{
		TaskID: "task-" + run + "-" + node, RunID: run, NodeID: node, Attempt: attempt,
		ExecutionToken: "tok-" + node, Context: map[string]any{"n": 1},
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
