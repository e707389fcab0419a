package component

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/pkg/executor"
)

// TestMetricsCountAKnownWorkloadExactly: 100 calculate-tax tasks over the
// Kafka transport of the real service, 10 of them with an amount that is
// not a number, end up in /q/metrics as exactly 90 COMPLETED and 10 FAILED,
// 100 handler durations and 100 results delivered; once the group has
// committed them, the consumer lag of every partition it holds is 0, and
// the outbox is empty.
func TestMetricsCountAKnownWorkloadExactly(t *testing.T) {
	broker := kafkatest.Start(t)
	r := startKafkaService(t, broker, kafkaEnv(broker))
	results := broker.Results(t)
	ctx := deadline(t, conditionTimeout)

	const tasks, failing = 100, 10
	for i := range tasks {
		msg := kafkaTaxTask(fmt.Sprintf("run-metrics-%d", i%4), i)
		if i%(tasks/failing) == 0 {
			msg.Context["amount"] = "lots" // INVALID_INPUT: FAILED
		}
		require.NoError(t, broker.ProduceTask(ctx, msg))
	}
	require.NoError(t, results.WaitForUnique(ctx, tasks), "logs:\n%s", r.logs.text())
	waitForLagZero(t, broker, conditionTimeout)

	// The delivery counter moves just after the broker has the results.
	want := map[string]float64{
		`gamelan_executor_tasks_total{executor_type="calculate-tax",status="COMPLETED"}`: tasks - failing,
		`gamelan_executor_tasks_total{executor_type="calculate-tax",status="FAILED"}`:    failing,
		`gamelan_executor_task_duration_seconds_count{executor_type="calculate-tax"}`:    tasks,
		`gamelan_executor_results_delivered_total{transport="kafka"}`:                    tasks,
		`gamelan_executor_outbox_results{transport="kafka"}`:                             0,
		`gamelan_executor_tasks_queued{executor_type="calculate-tax"}`:                   0,
		`gamelan_executor_slots_in_use{executor_type="calculate-tax"}`:                   0,
		`gamelan_executor_registered{executor_type="calculate-tax"}`:                     1,
	}
	var samples map[string]float64
	require.Eventually(t, func() bool {
		samples = scrapeMetrics(t, r.baseURL)
		for name, value := range want {
			if got, ok := samples[name]; !ok || got != value {
				return false
			}
		}
		return true
	}, conditionTimeout, conditionTick, "want %v; /q/metrics has %v", want, &samples)

	lags := withPrefix(samples, "gamelan_executor_kafka_consumer_lag{")
	assert.NotEmpty(t, lags, "no consumer lag for the partitions held")
	for series, lag := range lags {
		assert.Zero(t, lag, series)
	}
}

// parkedType is an executor type whose handlers wait until released.
const parkedType = "parked"

// parked is an executor of parkedType with slots concurrent handlers, each
// waiting for release to be closed.
type parked struct {
	slots   int
	release <-chan struct{}
}

func (p parked) Descriptor() executor.Descriptor {
	return executor.Descriptor{Type: parkedType, CommunicationType: executor.Kafka, MaxConcurrentTasks: p.slots}
}

func (p parked) Execute(ctx context.Context, _ *executor.Task) (*executor.Result, error) {
	select {
	case <-p.release:
		return &executor.Result{Status: executor.StatusCompleted}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestScalingSignalOfParkedTasks: with handlers parked, /q/metrics shows
// the slots they hold, the tasks queued behind them and how long the
// oldest has waited, the work and saturation, and the Kafka lag of every
// task not yet answered; once they are released, all fall back.
func TestScalingSignalOfParkedTasks(t *testing.T) {
	const slots, queued = 2, 3
	broker := kafkatest.Start(t)
	release := make(chan struct{})
	releaseOnce := func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}
	t.Cleanup(releaseOnce)
	vars := kafkaEnv(broker)
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = parkedType
	delete(vars, "GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES")
	vars = maps.Clone(vars)
	r := start(t, nil, func(ctx context.Context, stdout, stderr io.Writer) error {
		return service.RunHosting(ctx, nil, env(vars), stdout, stderr, []executor.Executor{parked{slots: slots, release: release}})
	})
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 1), "logs:\n%s", r.logs.text())
	results := broker.Results(t)

	ctx := deadline(t, conditionTimeout)
	for i := range slots + queued {
		msg := kafkaTaxTask("run-parked", i) // one run: one partition
		msg.TargetExecutor, msg.Context = parkedType, map[string]any{}
		require.NoError(t, broker.ProduceTask(ctx, msg))
	}

	gauge := func(name string) string { return name + `{executor_type="` + parkedType + `"}` }
	var samples map[string]float64
	require.Eventually(t, func() bool {
		samples = scrapeMetrics(t, r.baseURL)
		lag := withPrefix(samples, "gamelan_executor_kafka_consumer_lag{")
		return samples[gauge("gamelan_executor_slots_in_use")] == slots &&
			samples[gauge("gamelan_executor_tasks_queued")] == queued &&
			samples[gauge("gamelan_executor_oldest_queued_task_age_seconds")] > 0 &&
			sum(lag) == slots+queued
	}, conditionTimeout, conditionTick, "parked tasks not shown; /q/metrics has %v", &samples)
	assert.Equal(t, 0.0, samples[gauge("gamelan_executor_slots_free")])
	assert.Equal(t, float64(slots+queued), samples[gauge("gamelan_executor_work")])
	assert.Equal(t, float64(slots+queued)/slots, samples[gauge("gamelan_executor_saturation")])
	assert.Contains(t, samples, `gamelan_executor_outbox_results{transport="kafka"}`)

	releaseOnce()
	require.NoError(t, results.WaitForUnique(ctx, slots+queued), "logs:\n%s", r.logs.text())
	require.Eventually(t, func() bool {
		samples = scrapeMetrics(t, r.baseURL)
		return samples[gauge("gamelan_executor_slots_in_use")] == 0 &&
			samples[gauge("gamelan_executor_slots_free")] == slots &&
			samples[gauge("gamelan_executor_tasks_queued")] == 0 &&
			samples[gauge("gamelan_executor_oldest_queued_task_age_seconds")] == 0 &&
			samples[`gamelan_executor_outbox_results{transport="kafka"}`] == 0 &&
			sum(withPrefix(samples, "gamelan_executor_kafka_consumer_lag{")) == 0
	}, conditionTimeout, conditionTick, "gauges did not fall back; /q/metrics has %v", &samples)
}

// scrapeMetrics reads /q/metrics into a map from series (name and labels,
// as the text format writes them) to value. A failed scrape returns an
// empty map, so that a caller polling for a condition polls again.
func scrapeMetrics(t *testing.T, baseURL string) map[string]float64 {
	t.Helper()
	samples := make(map[string]float64)
	resp, err := http.Get(baseURL + "/q/metrics")
	if err != nil {
		return samples
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cut := strings.LastIndexByte(line, ' ')
		if cut < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[cut+1:], 64); err == nil {
			samples[line[:cut]] = v
		}
	}
	return samples
}

// withPrefix returns the samples whose series starts with prefix.
func withPrefix(samples map[string]float64, prefix string) map[string]float64 {
	kept := make(map[string]float64)
	for series, v := range samples {
		if strings.HasPrefix(series, prefix) {
			kept[series] = v
		}
	}
	return kept
}

func sum(samples map[string]float64) float64 {
	total := 0.0
	for _, v := range samples {
		total += v
	}
	return total
}
