package telemetry_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/telemetry"
)

func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	server := httptest.NewServer(m.Handler())
	defer server.Close()
	resp, err := http.Get(server.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

func TestMetricsExposeWhatTheRuntimeObserved(t *testing.T) {
	m := telemetry.NewMetrics()
	m.ObserveLoad(func() telemetry.Load {
		return telemetry.Load{Admitted: 7, Running: map[string]int{"calculate-tax": 3}}
	})
	m.TaskFinished("calculate-tax", domain.StatusCompleted, 20*time.Millisecond)
	m.TaskFinished("calculate-tax", domain.StatusCompleted, 30*time.Millisecond)
	m.TaskFinished("calculate-tax", domain.StatusFailed, time.Millisecond)
	m.TaskFinished("order-validator", domain.StatusCompleted, time.Millisecond)
	m.TaskRefused("grpc", "overloaded")
	m.ResultsDelivered("grpc", 3, 5*time.Millisecond)
	m.ResultsDelivered("kafka", 4, 5*time.Millisecond)
	m.ResultsDelivered("kafka", 1, 5*time.Millisecond)
	m.DeliveryRetried("grpc")
	m.ResultsUndelivered("kafka", 2)
	m.HeartbeatFailed("calculate-tax")
	m.RegistrationFailed("calculate-tax")

	body := scrape(t, m)
	for _, line := range []string{
		`gamelan_executor_tasks_total{executor_type="calculate-tax",status="COMPLETED"} 2`,
		`gamelan_executor_tasks_total{executor_type="calculate-tax",status="FAILED"} 1`,
		`gamelan_executor_task_duration_seconds_count{executor_type="calculate-tax"} 3`,
		`gamelan_executor_tasks_total{executor_type="order-validator",status="COMPLETED"} 1`,
		`gamelan_executor_task_duration_seconds_count{executor_type="order-validator"} 1`,
		`gamelan_executor_tasks_refused_total{reason="overloaded",transport="grpc"} 1`,
		`gamelan_executor_results_delivered_total{transport="grpc"} 3`,
		`gamelan_executor_result_delivery_seconds_count{transport="grpc"} 1`,
		`gamelan_executor_results_delivered_total{transport="kafka"} 5`,
		`gamelan_executor_result_delivery_seconds_count{transport="kafka"} 2`,
		`gamelan_executor_result_delivery_retries_total{transport="grpc"} 1`,
		`gamelan_executor_results_undelivered_total{transport="kafka"} 2`,
		`gamelan_executor_heartbeat_failures_total{executor_type="calculate-tax"} 1`,
		`gamelan_executor_registration_failures_total{executor_type="calculate-tax"} 1`,
		`gamelan_executor_tasks_admitted 7`,
		`gamelan_executor_tasks_running{executor_type="calculate-tax"} 3`,
		`go_goroutines`,
	} {
		assert.Contains(t, body, line)
	}
}

// Workers record tasks concurrently, each type's first task included:
// every one is counted under its own labels.
func TestMetricsCountConcurrentTasks(t *testing.T) {
	m := telemetry.NewMetrics()
	types := []string{"a", "b", "c", "d"}
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 100 {
				m.TaskFinished(types[(g+i)%len(types)], domain.StatusCompleted, time.Millisecond)
			}
		}()
	}
	for range 8 {
		<-done
	}
	body := scrape(t, m)
	for _, typ := range types {
		assert.Contains(t, body, `gamelan_executor_tasks_total{executor_type="`+typ+`",status="COMPLETED"} 200`)
	}
}

// TestScalingGauges: the slots, queue, work, saturation and outbox gauges
// are read from the load snapshot at each scrape, and the consumer lag from
// its own, whose partitions come and go with it.
func TestScalingGauges(t *testing.T) {
	m := telemetry.NewMetrics()
	m.ObserveLoad(func() telemetry.Load {
		return telemetry.Load{
			Types: map[string]domain.TypeLoad{
				"calculate-tax": {Slots: 4, Limit: 3, SlotsInUse: 4, Queued: 2, OldestQueued: 1500 * time.Millisecond, Registered: true, RateLimit: 50},
				"idle":          {Slots: 2},
			},
			Outbox: map[string]int{"kafka": 3},
		}
	})
	partitions := []telemetry.PartitionLag{{Topic: "tasks", Partition: 0, Lag: 12}, {Topic: "tasks", Partition: 1, Lag: 0}}
	m.ObserveConsumerLag(func() []telemetry.PartitionLag { return partitions })

	body := scrape(t, m)
	for _, line := range []string{
		`gamelan_executor_slots_in_use{executor_type="calculate-tax"} 4`,
		`gamelan_executor_slots_free{executor_type="calculate-tax"} 0`,
		`gamelan_executor_concurrency_limit{executor_type="calculate-tax"} 3`,
		`gamelan_executor_tasks_queued{executor_type="calculate-tax"} 2`,
		`gamelan_executor_oldest_queued_task_age_seconds{executor_type="calculate-tax"} 1.5`,
		`gamelan_executor_work{executor_type="calculate-tax"} 6`,
		`gamelan_executor_saturation{executor_type="calculate-tax"} 1.5`,
		`gamelan_executor_slots_in_use{executor_type="idle"} 0`,
		`gamelan_executor_slots_free{executor_type="idle"} 2`,
		`gamelan_executor_oldest_queued_task_age_seconds{executor_type="idle"} 0`,
		`gamelan_executor_saturation{executor_type="idle"} 0`,
		`gamelan_executor_registered{executor_type="calculate-tax"} 1`,
		`gamelan_executor_registered{executor_type="idle"} 0`,
		`gamelan_executor_rate_limit_tasks_per_second{executor_type="calculate-tax"} 50`,
		`gamelan_executor_rate_limit_tasks_per_second{executor_type="idle"} 0`,
		`gamelan_executor_outbox_results{transport="kafka"} 3`,
		`gamelan_executor_kafka_consumer_lag{partition="0",topic="tasks"} 12`,
		`gamelan_executor_kafka_consumer_lag{partition="1",topic="tasks"} 0`,
	} {
		assert.Contains(t, body, line+"\n")
	}

	partitions = partitions[:1] // partition 1 revoked
	assert.NotContains(t, scrape(t, m), `partition="1"`)
}
