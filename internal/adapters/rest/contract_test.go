package rest

import (
	"context"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The port contract suites, run against the HTTP adapters and an
// resttest registry (or an engine-side dispatcher) on 127.0.0.1. Every
// scenario gets its own registry or intake.

func TestRegistrarContract(t *testing.T) {
	porttest.Registrar(t, func(t *testing.T) porttest.RegistrarHarness {
		registry := resttest.Start(t)
		return porttest.RegistrarHarness{
			Registrar: NewRegistrar(newClient(t, registry.URL()), 5*time.Minute),
			Lookup: func(executorID string) (domain.Registration, bool) {
				info, ok := registry.Executor(executorID)
				return registrationOf(info), ok
			},
			All: func() []domain.Registration {
				var regs []domain.Registration
				for _, info := range registry.Executors() {
					regs = append(regs, registrationOf(info))
				}
				return regs
			},
			// ExecutorInfo carries the serving communication type only, and
			// no version field: the adapter puts the descriptor's version in
			// metadata only when the registration's metadata has none (the
			// service's always has one, the service version), so the
			// descriptor's version does not travel.
			Unsupported: []porttest.Field{
				porttest.FieldRegistrationDescriptorCommunicationType,
				porttest.FieldRegistrationVersion,
			},
		}
	})
}

func TestHeartbeaterContract(t *testing.T) {
	heartbeaterContract(t)
}

// TestHeartbeaterContractGamelanMode runs the suite against a registry that
// answers heartbeats of executors it forgot with 200, as Gamelan does: the
// adapter must learn it from the lookup that follows each heartbeat.
func TestHeartbeaterContractGamelanMode(t *testing.T) {
	heartbeaterContract(t, resttest.GamelanMode())
}

func heartbeaterContract(t *testing.T, opts ...resttest.Option) {
	porttest.Heartbeater(t, func(t *testing.T) porttest.HeartbeaterHarness {
		registry := resttest.Start(t, opts...)
		client := newClient(t, registry.URL())
		return porttest.HeartbeaterHarness{
			Heartbeater: NewHeartbeater(client),
			Registrar:   NewRegistrar(client, time.Minute),
			LastHeartbeat: func(executorID string) (domain.Heartbeat, bool) {
				if len(registry.Heartbeats(executorID)) == 0 {
					return domain.Heartbeat{}, false
				}
				return domain.Heartbeat{ExecutorID: executorID}, true
			},
			Forget: registry.Forget,
			// The heartbeat is a POST without a body: no figure travels.
			Unsupported: []porttest.Field{
				porttest.FieldHeartbeatCurrentTasks, porttest.FieldHeartbeatCompletedTasks,
				porttest.FieldHeartbeatFailedTasks, porttest.FieldHeartbeatStatus,
			},
		}
	})
}

// TestIntakeContract runs the TaskSource suite against the REST intake, the
// engine side posting each task with its identity in headers and the rest in
// a JSON body, retrying while the intake answers 503.
func TestIntakeContract(t *testing.T) {
	intakeContract(t, true, []porttest.Field{
		// No header or body field carries it; the REST wire cannot cancel
		// either (Cancel is nil).
		porttest.FieldTaskScheduledAt,
	})
}

// TestIntakeContractHeadersOnly runs the suite with the headers alone, as
// the Gamelan engine posts today (its JSON body fails to serialize): only
// the identity, the executor id and the idempotency key travel.
func TestIntakeContractHeadersOnly(t *testing.T) {
	intakeContract(t, false, []porttest.Field{
		porttest.FieldTaskID, porttest.FieldTaskNodeName, porttest.FieldTaskNodeType,
		porttest.FieldTaskExecutorType, porttest.FieldTaskExecutionToken,
		porttest.FieldTaskContext, porttest.FieldTaskConfiguration,
		porttest.FieldTaskTimeout, porttest.FieldTaskScheduledAt,
	})
}

func intakeContract(t *testing.T, withBody bool, unsupported []porttest.Field) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		intake := newIntake(t, IntakeConfig{})
		engine := newDispatcher(t, endpoint(intake))
		return porttest.TaskSourceHarness{
			Source: intake,
			Publish: func(_ context.Context, task domain.Task) error {
				engine.post(taskPost(t, task, withBody))
				return nil
			},
			// An accepted task is the executor's: REST has no redelivery,
			// no cancellation and no second intake the engine would switch
			// to.
			Push:        true,
			Unsupported: unsupported,
		}
	})
}
