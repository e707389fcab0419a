package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
)

func init() {
	register(scenario{name: "coldstart/grpc", smoke: true, run: runColdStartGRPC})
	register(scenario{name: "coldstart/kafka", smoke: true, run: runColdStartKafka})
}

// coldStarts is how many starts a cold-start figure is the median of.
func coldStarts(smoke bool) int {
	if smoke {
		return 3
	}
	return 5
}

// coldEnv is the environment of an executor started by hand (startService
// would wait for readiness, which is part of what a cold start measures):
// startService's defaults, a free HTTP port, and extra.
func coldEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":     "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":     "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":     "warn",
		"GAMELAN_EXECUTOR_ENABLED_TYPES": "calculate-tax",
		"GAMELAN_EXECUTOR_INSTANCE_ID":   "bench",
	}
	maps.Copy(env, extra)
	return env
}

// runColdStartGRPC measures the time from exec of the executor binary to
// the engine receiving the result of a task that was waiting for it in the
// engine's StreamTasks queue.
func runColdStartGRPC(ctx context.Context, o *options) ([]Row, error) {
	engine, err := startExtrasEngine()
	if err != nil {
		return nil, err
	}
	defer engine.close()
	const name = "bench-cold"
	id := name + "-calculate-tax-bench"
	var times []time.Duration
	for k := range coldStarts(o.smoke) {
		node := fmt.Sprintf("c%02d", k)
		engine.server.Enqueue(id, taxTask(node))
		start := time.Now()
		p, err := startProc("executor", o.executor, coldEnv(map[string]string{
			"GAMELAN_EXECUTOR_NAME":               name,
			"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET": engine.addr(),
			"GAMELAN_EXECUTOR_GRPC_INTAKE":        "stream",
			"GAMELAN_EXECUTOR_GRPC_HOST":          "127.0.0.1",
			"GAMELAN_EXECUTOR_GRPC_PORT":          "0",
		}))
		if err != nil {
			return nil, err
		}
		at, err := engine.resultAt(ctx, node, 30*time.Second)
		if err = errors.Join(err, p.stop(45*time.Second)); err != nil {
			return nil, fmt.Errorf("start %d: %w", k+1, err)
		}
		times = append(times, at.Sub(start))
	}
	if _, _, other, _ := engine.tally(statusCompleted); other > 0 {
		return nil, fmt.Errorf("%d cold-start tasks not COMPLETED", other)
	}
	return []Row{coldRow("cold start to first result (gRPC stream)", times, 100,
		"exec to the result's arrival at the engine; the task waits in the engine's StreamTasks queue")}, nil
}

// runColdStartKafka measures the time from exec of the executor binary to
// the harness reading the result of a task record already in the tasks
// topic.
func runColdStartKafka(ctx context.Context, o *options) ([]Row, error) {
	var times []time.Duration
	for k := range coldStarts(o.smoke) {
		d, err := coldStartKafka(ctx, o, k)
		if err != nil {
			return nil, fmt.Errorf("start %d: %w", k+1, err)
		}
		times = append(times, d)
	}
	return []Row{coldRow("cold start to first result (Kafka)", times, 300,
		"exec to the harness reading the result; the task record is in the topic before the start; a fresh cluster and consumer group each time")}, nil
}

// coldStartKafka is one Kafka cold start, against a cluster of its own.
func coldStartKafka(ctx context.Context, o *options, k int) (time.Duration, error) {
	rig, err := newKafkaRig(ctx)
	if err != nil {
		return 0, err
	}
	defer rig.close()
	round := rig.newRound(1, 0)
	if err := rig.producer.Produce(ctx, kafkaengine.TasksTopic, kafkaRunID(0), round.values[0], nil); err != nil {
		return 0, err
	}
	round.rec.markSent(0) // the clock starts at the exec
	p, err := startProc("executor", o.executor, coldEnv(map[string]string{
		"GAMELAN_EXECUTOR_NAME":                    fmt.Sprintf("bench-cold-%02d", k),
		"GAMELAN_EXECUTOR_TRANSPORT":               "kafka",
		"GAMELAN_EXECUTOR_REGISTRAR":               "kafka",
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS": rig.addrs(),
		"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":     "calculate-tax=kafka",
	}))
	if err != nil {
		return 0, err
	}
	err = rig.await(ctx, round, 30*time.Second)
	if err = errors.Join(err, round.check(), p.stop(45*time.Second)); err != nil {
		return 0, err
	}
	return time.Duration(round.rec.percentiles().Max * float64(time.Millisecond)), nil
}

// coldRow reports the median of times against an AtMost target in ms.
func coldRow(name string, times []time.Duration, limit float64, how string) Row {
	sorted := slices.Sorted(slices.Values(times))
	each := make([]string, len(times))
	for i, t := range times {
		each[i] = fmt.Sprintf("%.0f", float64(t)/float64(time.Millisecond))
	}
	return Row{Section: footprintSection, Name: name, Unit: "ms",
		Value: float64(sorted[len(sorted)/2]) / float64(time.Millisecond), Target: Target{AtMost, limit},
		Note: fmt.Sprintf("median of %d starts (%s ms); %s", len(times), strings.Join(each, ", "), how)}
}
