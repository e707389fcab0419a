package memory_test

import (
	"context"
	"math"
	"testing"

	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

func taskSourceHarness(t *testing.T) (porttest.TaskSourceHarness, *memory.Backend) {
	t.Helper()
	engine := memory.NewBackend()
	return porttest.TaskSourceHarness{
		Source: engine.TaskSource(),
		Publish: func(_ context.Context, task domain.Task) error {
			engine.Submit(task)
			return nil
		},
		Cancel:     engine.Cancel,
		Redelivers: true,
		Successor:  func() ports.TaskSource { return engine.TaskSource() },
	}, engine
}

func TestTaskSourceContract(t *testing.T) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		h, _ := taskSourceHarness(t)
		return h
	})
}

// TestTaskSourceContractWithoutOptionalHooks runs the suite the way an
// adapter with fewer engine-side hooks would, so that the suite's fallbacks
// (quiet-period observation, skipped scenarios) run against a correct source
// too.
func TestTaskSourceContractWithoutOptionalHooks(t *testing.T) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		h, _ := taskSourceHarness(t)
		h.Cancel = nil
		h.Successor = nil
		return h
	})
}

func TestResultSinkContract(t *testing.T) {
	porttest.ResultSink(t, func(t *testing.T) porttest.ResultSinkHarness {
		engine := memory.NewBackend()
		return porttest.ResultSinkHarness{
			Sink:     engine.ResultSink(),
			Received: engine.Results,
			Break:    func() { engine.FailDeliveries(math.MaxInt) },
			Restore:  func() { engine.FailDeliveries(0) },
			Hold:     engine.HoldDeliveries,
		}
	})
}

func TestRegistrarContract(t *testing.T) {
	porttest.Registrar(t, func(t *testing.T) porttest.RegistrarHarness {
		engine := memory.NewBackend()
		return porttest.RegistrarHarness{
			Registrar: engine.Registrar(),
			Lookup:    engine.Registration,
			All:       engine.Registrations,
		}
	})
}

func TestHeartbeaterContract(t *testing.T) {
	porttest.Heartbeater(t, func(t *testing.T) porttest.HeartbeaterHarness {
		engine := memory.NewBackend()
		return porttest.HeartbeaterHarness{
			Heartbeater:   engine.Heartbeater(),
			Registrar:     engine.Registrar(),
			LastHeartbeat: engine.LastHeartbeat,
			Forget:        engine.Forget,
		}
	})
}
