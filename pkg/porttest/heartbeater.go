package porttest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// HeartbeaterHarness is one Heartbeater under test, a Registrar of the same
// engine (heartbeats are for registered executors), and the engine side.
type HeartbeaterHarness struct {
	// Heartbeater is the adapter under test.
	Heartbeater ports.Heartbeater
	// Registrar registers executors with the same engine. Required.
	Registrar ports.Registrar
	// LastHeartbeat returns the last heartbeat the engine accepted for an
	// executor id. Required.
	LastHeartbeat func(executorID string) (domain.Heartbeat, bool)
	// Forget makes the engine drop an executor's registration, as after an
	// engine restart. Nil when the harness cannot; since that is also when a
	// transport cannot tell that the engine does not know an executor
	// (fire-and-forget heartbeats), the NotRegistered and Forgotten
	// scenarios are then skipped.
	Forget func(executorID string)
	// Unsupported lists the heartbeat fields the transport cannot carry.
	Unsupported []Field
	// WaitTimeout bounds calls and waits; DefaultWaitTimeout if zero.
	WaitTimeout time.Duration
}

// Heartbeater runs the Heartbeater contract scenarios, each as a parallel
// subtest with its own harness from newHarness:
//
//   - Recorded: heartbeats of a registered executor reach the engine with
//     their load figures and status, the last one last.
//   - NotRegistered (Forget only): a heartbeat for an id never registered,
//     or unregistered, fails with an error wrapping domain.ErrNotRegistered.
//   - Forgotten (Forget only): once the engine forgets a registered executor
//     its heartbeats fail with domain.ErrNotRegistered, and succeed again
//     after it registers again.
//   - CancelledContext: Heartbeat with a cancelled context returns an error
//     promptly.
//   - Concurrency: 16 goroutines sending 20 heartbeats each all succeed, and
//     the engine's last heartbeat is one of them.
func Heartbeater(t *testing.T, newHarness func(t *testing.T) HeartbeaterHarness) {
	t.Helper()
	runScenarios(t, "Heartbeater", func(t *testing.T) *heartbeatScenario {
		h := newHarness(t)
		require.NotNil(t, h.Heartbeater, "HeartbeaterHarness.Heartbeater")
		require.NotNil(t, h.Registrar, "HeartbeaterHarness.Registrar")
		require.NotNil(t, h.LastHeartbeat, "HeartbeaterHarness.LastHeartbeat")
		return &heartbeatScenario{
			t:           t,
			h:           h,
			id:          UniqueID(t),
			wait:        orDefault(h.WaitTimeout, DefaultWaitTimeout),
			unsupported: fieldSet(h.Unsupported),
		}
	}, []scenario[*heartbeatScenario]{
		{"Recorded", testHeartbeatRecorded},
		{"NotRegistered", testHeartbeatNotRegistered},
		{"Forgotten", testHeartbeatForgotten},
		{"CancelledContext", testHeartbeatCancelledContext},
		{"Concurrency", testHeartbeatConcurrency},
	})
}

// heartbeatScenario is the state one Heartbeater scenario works with.
type heartbeatScenario struct {
	t           *testing.T
	h           HeartbeaterHarness
	id          string // the scenario's executor id
	wait        time.Duration
	unsupported fieldSet
}

func (s *heartbeatScenario) register(id string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	require.NoError(s.t, s.h.Registrar.Register(ctx, registrationFor(id, "calculate-tax")), "Register %s", id)
}

func (s *heartbeatScenario) beat(hb domain.Heartbeat) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	return s.h.Heartbeater.Heartbeat(ctx, hb)
}

// waitLast waits until the engine's last heartbeat for hb's executor has
// hb's CurrentTasks, then compares the other supported fields. A transport
// that carries no figures (FieldHeartbeatCurrentTasks unsupported) only
// waits until the engine has a heartbeat of the executor.
func (s *heartbeatScenario) waitLast(want domain.Heartbeat) {
	s.t.Helper()
	var got domain.Heartbeat
	eventually(s.t, s.wait, func() bool {
		last, ok := s.h.LastHeartbeat(want.ExecutorID)
		got = last
		return ok && (last.CurrentTasks == want.CurrentTasks || !s.unsupported.supports(FieldHeartbeatCurrentTasks))
	}, "the engine's last heartbeat for %s never showed %d current tasks", want.ExecutorID, want.CurrentTasks)
	t := s.t
	assert.Equal(t, want.ExecutorID, got.ExecutorID, "ExecutorID")
	if s.unsupported.supports(FieldHeartbeatCompletedTasks) {
		assert.Equal(t, want.CompletedTasks, got.CompletedTasks, "field %s", FieldHeartbeatCompletedTasks)
	}
	if s.unsupported.supports(FieldHeartbeatFailedTasks) {
		assert.Equal(t, want.FailedTasks, got.FailedTasks, "field %s", FieldHeartbeatFailedTasks)
	}
	if s.unsupported.supports(FieldHeartbeatStatus) {
		assert.Equal(t, want.Status, got.Status, "field %s", FieldHeartbeatStatus)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func (s *heartbeatScenario) requireNotRegistered(hb domain.Heartbeat, when string) {
	s.t.Helper()
	err := s.beat(hb)
	require.ErrorIs(s.t, err, domain.ErrNotRegistered, "Heartbeat for %s %s", hb.ExecutorID, when)
}

func testHeartbeatRecorded(s *heartbeatScenario) {
	s.register(s.id)
	healthy := domain.Heartbeat{ExecutorID: s.id, CurrentTasks: 3, CompletedTasks: 41, FailedTasks: 2, Status: domain.HealthHealthy}
	require.NoError(s.t, s.beat(healthy), "Heartbeat")
	s.waitLast(healthy)

	draining := domain.Heartbeat{ExecutorID: s.id, CurrentTasks: 1, CompletedTasks: 44, FailedTasks: 3, Status: domain.HealthDraining}
	require.NoError(s.t, s.beat(draining), "Heartbeat while draining")
	s.waitLast(draining)
}

func testHeartbeatNotRegistered(s *heartbeatScenario) {
	if s.h.Forget == nil {
		s.t.Skip("the engine cannot forget executors, nor tell that it does not know one (Forget is nil)")
	}
	s.requireNotRegistered(domain.Heartbeat{ExecutorID: s.id + "-never-registered", Status: domain.HealthHealthy}, "never registered")

	s.register(s.id)
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	require.NoError(s.t, s.h.Registrar.Unregister(ctx, s.id), "Unregister")
	s.requireNotRegistered(domain.Heartbeat{ExecutorID: s.id, Status: domain.HealthHealthy}, "after Unregister")
}

func testHeartbeatForgotten(s *heartbeatScenario) {
	if s.h.Forget == nil {
		s.t.Skip("the engine cannot forget executors (Forget is nil)")
	}
	s.register(s.id)
	before := domain.Heartbeat{ExecutorID: s.id, CurrentTasks: 2, Status: domain.HealthHealthy}
	require.NoError(s.t, s.beat(before), "Heartbeat while registered")

	s.h.Forget(s.id)
	s.requireNotRegistered(domain.Heartbeat{ExecutorID: s.id, CurrentTasks: 5, Status: domain.HealthHealthy}, "the engine forgot")

	s.register(s.id) // what the runtime does on ErrNotRegistered
	after := domain.Heartbeat{ExecutorID: s.id, CurrentTasks: 4, Status: domain.HealthHealthy}
	require.NoError(s.t, s.beat(after), "Heartbeat after registering again")
	s.waitLast(after)
}

func testHeartbeatCancelledContext(s *heartbeatScenario) {
	s.register(s.id)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := returnsPromptly(s.t, "Heartbeat with a cancelled context", func() error {
		return s.h.Heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: s.id, Status: domain.HealthHealthy})
	})
	require.Error(s.t, err, "Heartbeat with a cancelled context")
}

func testHeartbeatConcurrency(s *heartbeatScenario) {
	const goroutines, each = 16, 20
	s.register(s.id)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				hb := domain.Heartbeat{ExecutorID: s.id, CurrentTasks: 1000 + g*each + i, CompletedTasks: i, Status: domain.HealthHealthy}
				if err := s.beat(hb); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	require.Empty(s.t, errs, "concurrent Heartbeat calls failed")
	eventually(s.t, s.wait, func() bool {
		last, ok := s.h.LastHeartbeat(s.id)
		if !s.unsupported.supports(FieldHeartbeatCurrentTasks) {
			return ok
		}
		return ok && last.CurrentTasks >= 1000 && last.CurrentTasks < 1000+goroutines*each
	}, "the engine's last heartbeat for %s is none of those sent", s.id)
}
