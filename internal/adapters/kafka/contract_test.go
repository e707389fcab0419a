package kafka_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The port contract suites, run against the Kafka adapters and a kafkatest
// broker on 127.0.0.1. Every scenario starts its own broker, so scenarios
// share no topic, group or fault.

func TestResultSinkContract(t *testing.T) {
	t.Parallel()
	porttest.ResultSink(t, func(t *testing.T) porttest.ResultSinkHarness {
		b := kafkatest.Start(t)
		results := b.Results(t)
		cfg := brokerConfig(b, "")
		// Break makes the broker refuse every produce to the results topic
		// with a retriable error (NOT_ENOUGH_REPLICAS), as a cluster that
		// lost its in-sync replicas does: the producer retries, then fails
		// the send. Restore lifts the fault.
		var (
			mu    sync.Mutex
			fault *kfake.FaultHandle
		)
		return porttest.ResultSinkHarness{
			Sink: kafka.NewResultSink(newProducer(t, cfg), cfg),
			Received: func() []domain.Result {
				var received []domain.Result
				for _, m := range results.All() {
					received = append(received, resultFromMessage(m))
				}
				return received
			},
			Break: func() {
				mu.Lock()
				defer mu.Unlock()
				fault = b.Cluster().Fault(kfake.Fault{
					Keys:  []kmsg.Key{kmsg.Produce},
					Topic: kafkatest.ResultsTopic,
					Err:   kerr.NotEnoughReplicas,
					Count: -1,
				})
			},
			Restore: func() {
				mu.Lock()
				defer mu.Unlock()
				fault.Remove()
			},
			// The results topic is read by a consumer of its own.
			ReceivedLags: true,
			// ResultMessage carries every field of a result.
			WaitTimeout: waitTimeout,
		}
	})
}

func TestRegistrarContract(t *testing.T) {
	t.Parallel()
	porttest.Registrar(t, func(t *testing.T) porttest.RegistrarHarness {
		b := kafkatest.Start(t)
		registry := newRegistryView(t, b)
		return porttest.RegistrarHarness{
			Registrar: kafka.NewRegistrar(newProducer(t, brokerConfig(b, "")), brokerConfig(b, "")),
			Lookup:    registry.lookup,
			// All is nil: the view keeps one entry per executor id by
			// construction, so it could not show a duplicate anyway.
			// RegistrationMessage carries the serving communication type,
			// not the descriptor's declared one, and no version.
			Unsupported: []porttest.Field{
				porttest.FieldRegistrationVersion,
				porttest.FieldRegistrationDescriptorCommunicationType,
			},
			WaitTimeout: waitTimeout,
		}
	})
}

func TestHeartbeaterContract(t *testing.T) {
	t.Parallel()
	porttest.Heartbeater(t, func(t *testing.T) porttest.HeartbeaterHarness {
		b := kafkatest.Start(t)
		cfg := brokerConfig(b, "")
		producer := newProducer(t, cfg)
		heartbeats := b.Heartbeats(t)
		return porttest.HeartbeaterHarness{
			Heartbeater: kafka.NewHeartbeater(producer, cfg),
			Registrar:   kafka.NewRegistrar(producer, cfg),
			LastHeartbeat: func(executorID string) (domain.Heartbeat, bool) {
				// Heartbeats are keyed by executor id, so one executor's
				// share a partition and arrive in the order written.
				var last *kafka.HeartbeatMessage
				for _, m := range heartbeats.Messages() {
					if m.ExecutorID == executorID {
						last = &m
					}
				}
				if last == nil {
					return domain.Heartbeat{}, false
				}
				return heartbeatFromMessage(*last), true
			},
			// Forget is nil: a broker acknowledges a heartbeat whether or
			// not any engine knows the executor, so the adapter cannot
			// report domain.ErrNotRegistered.
			WaitTimeout: waitTimeout,
		}
	})
}

// TestTaskSourceContract runs the suite in every ordering mode: ordering
// changes when a record is offered, never the source's guarantees.
func TestTaskSourceContract(t *testing.T) {
	t.Parallel()
	for _, mode := range []kafka.Ordering{kafka.Unordered, kafka.KeyOrder, kafka.PartitionOrder} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			taskSourceContract(t, mode)
		})
	}
}

// orderedPartitions is the number of partitions of the tasks topic in the
// suite's PartitionOrder scenarios: more than any scenario publishes tasks.
const orderedPartitions = 32

// taskSourceContract runs the suite with the source in mode. The suite's
// scenarios hold several tasks of one run unsettled at once, which an
// ordered source rightly never offers when they share a key or a
// partition; so in KeyOrder each task is written with a record key of its
// own (its idempotency key), and in PartitionOrder to a partition of its
// own. The modes' ordering itself is tested in ordering_test.go.
func taskSourceContract(t *testing.T, mode kafka.Ordering) {
	porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
		var opts []kafkatest.Option
		if mode == kafka.PartitionOrder {
			opts = append(opts, kafkatest.WithPartitions(orderedPartitions))
		}
		b := kafkatest.Start(t, opts...)
		cfg := brokerConfig(b, porttest.UniqueID(t))
		cfg.Ordering = mode
		logs := newLogBook(t)
		newTaskSource := func() ports.TaskSource { return newSource(t, cfg, logs) }
		var (
			mu        sync.Mutex
			published int32
		)
		publish := func(ctx context.Context, task domain.Task) error {
			switch mode {
			case kafka.KeyOrder:
				key := domain.IdempotencyKey(task.RunID, task.NodeID, task.Attempt)
				return b.ProduceJSON(ctx, kafkatest.TasksTopic, key, taskMessage(task), nil)
			case kafka.PartitionOrder:
				mu.Lock()
				partition := published % orderedPartitions
				published++
				mu.Unlock()
				key := keyOnPartition(t, task.NodeID, partition, orderedPartitions)
				return b.ProduceJSON(ctx, kafkatest.TasksTopic, key, taskMessage(task), nil)
			default:
				return b.ProduceTask(ctx, taskMessage(task))
			}
		}
		return porttest.TaskSourceHarness{
			Source:  newTaskSource(),
			Publish: publish,
			// A handed-back task's offset is not committed, and the
			// source offers it again.
			Redelivers: true,
			// Replicas of one service share the consumer group.
			Successor: newTaskSource,
			// A TaskMessage has no node name and no configuration; the
			// executor id travels as targetExecutor, which the source
			// accepts because it serves that id.
			Unsupported: []porttest.Field{porttest.FieldTaskNodeName, porttest.FieldTaskConfiguration},
			WaitTimeout: waitTimeout,
		}
	})
}

// registryView is the reference engine's registry as the registration and
// unregistration topics describe it: an executor is registered when its
// latest registration is later than its latest unregistration, by the
// records' timestamps (the two topics are read by separate consumers, so
// arrival order across them means nothing).
type registryView struct {
	registrations   *kafkatest.MessageReader[kafka.RegistrationMessage]
	unregistrations *kafkatest.MessageReader[kafka.UnregistrationMessage]
}

func newRegistryView(t *testing.T, b *kafkatest.Broker) *registryView {
	t.Helper()
	return &registryView{registrations: b.Registrations(t), unregistrations: b.Unregistrations(t)}
}

// current returns the latest registration of each executor id that has
// not been withdrawn since.
func (v *registryView) current() map[string]kafka.RegistrationMessage {
	latest := make(map[string]kafka.RegistrationMessage)
	for _, m := range v.registrations.Messages() {
		if prev, ok := latest[m.ExecutorID]; !ok || !m.Timestamp.Before(prev.Timestamp) {
			latest[m.ExecutorID] = m
		}
	}
	for _, m := range v.unregistrations.Messages() {
		if reg, ok := latest[m.ExecutorID]; ok && !m.Timestamp.Before(reg.Timestamp) {
			delete(latest, m.ExecutorID)
		}
	}
	return latest
}

func (v *registryView) lookup(executorID string) (domain.Registration, bool) {
	m, ok := v.current()[executorID]
	if !ok {
		return domain.Registration{}, false
	}
	return registrationFromMessage(m), true
}

// The heartbeat's load, this service's addition to the protocol, travels
// as health.load on the heartbeats topic.
func TestHeartbeatCarriesTheLoad(t *testing.T) {
	t.Parallel()
	b := kafkatest.Start(t)
	cfg := brokerConfig(b, "")
	heartbeats := b.Heartbeats(t)
	hb := domain.Heartbeat{ExecutorID: "pay-1", CurrentTasks: 2, Status: domain.HealthHealthy, Load: 0.75}
	require.NoError(t, kafka.NewHeartbeater(newProducer(t, cfg), cfg).Heartbeat(waitContext(t), hb))
	require.NoError(t, heartbeats.WaitForMessages(waitContext(t), 1))
	assert.Equal(t, hb, heartbeatFromMessage(heartbeats.Messages()[0]))
}
