package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// The table's sections for Kafka.
const (
	kafkaLatencySection    = "Latency (open loop, Kafka)"
	kafkaThroughputSection = "Throughput (closed loop, Kafka)"
)

func init() {
	register(scenario{name: "latency/kafka", smoke: true, run: runKafkaLatency})
	register(scenario{name: "throughput/kafka", smoke: true, run: runKafkaThroughput})
}

// kafkaSUT is the system under test of a Kafka run: the executor service,
// or its raw baseline (this binary with -role raw-kafka).
type kafkaSUT struct {
	p   *proc
	svc *service // the executor's probes and metrics; nil for the baseline
}

// kafkaSeq numbers the services started, so that every one has a name
// (and consumer group) of its own, of the same length on both sides.
var kafkaSeq atomic.Int64

// startKafkaSUT starts the executor (raw false) or its raw baseline
// against rig's cluster and returns once it is in its consumer group.
func startKafkaSUT(ctx context.Context, o *options, rig *kafkaRig, raw bool) (*kafkaSUT, error) {
	seq := kafkaSeq.Add(1)
	if raw {
		name := fmt.Sprintf("bkr%05d", seq)
		p, line, err := startRole(ctx, "raw-kafka", "-brokers", rig.addrs(), "-group", name, "-executor-id", name+"-calculate-tax")
		if err != nil {
			return nil, err
		}
		if line != "ready" {
			p.kill()
			return nil, fmt.Errorf("raw-kafka said %q, not ready", line)
		}
		return &kafkaSUT{p: p}, nil
	}
	svc, err := startService(ctx, o.executor, map[string]string{
		"GAMELAN_EXECUTOR_NAME":                    fmt.Sprintf("bkx%05d", seq),
		"GAMELAN_EXECUTOR_INSTANCE_ID":             "bench",
		"GAMELAN_EXECUTOR_TRANSPORT":               "kafka",
		"GAMELAN_EXECUTOR_REGISTRAR":               "kafka",
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS": rig.addrs(),
		"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":     "calculate-tax=kafka",
		// Room for the deepest closed loop (256 in flight) and more.
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE": "64",
		"GAMELAN_EXECUTOR_QUEUE_SIZE":       "4096",
	})
	if err != nil {
		return nil, err
	}
	return &kafkaSUT{p: svc.proc, svc: svc}, nil
}

// mallocs is the process's count of heap allocations so far: the
// executor's go_memstats_mallocs_total, or the baseline's answer to
// SIGUSR1.
func (s *kafkaSUT) mallocs() (float64, error) {
	if s.svc != nil {
		return s.svc.metric("go_memstats_mallocs_total")
	}
	answer, err := s.p.ask(syscall.SIGUSR1, "mallocs ", 5*time.Second)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(answer, 64)
}

// kafkaSession is one system under test with a cluster of its own, warmed
// up: its consumer has fetched, its producer has connected, and its group
// session is established.
type kafkaSession struct {
	rig *kafkaRig
	sut *kafkaSUT
}

// kafkaWarmUp is how many tasks a session answers before anything is
// measured (at kafkaWarmUpInFlight at a time): sarama's first fetch alone
// waits about 100 ms.
const (
	kafkaWarmUp         = 500
	kafkaWarmUpInFlight = 16
)

func openKafkaSession(ctx context.Context, o *options, raw bool) (*kafkaSession, error) {
	rig, err := newKafkaRig(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka cluster: %w", err)
	}
	sut, err := startKafkaSUT(ctx, o, rig, raw)
	if err != nil {
		rig.close()
		return nil, err
	}
	s := &kafkaSession{rig: rig, sut: sut}
	if _, err := s.closed(ctx, kafkaWarmUpInFlight, kafkaWarmUp); err != nil {
		return nil, errors.Join(fmt.Errorf("warm-up: %w", err), s.close())
	}
	return s, nil
}

// close stops the system under test, then the cluster.
func (s *kafkaSession) close() error {
	err := s.sut.p.stop(45 * time.Second)
	s.rig.close()
	return err
}

// kafkaLag is how long after the last send the results of an open-loop run
// may lag before the run counts as not keeping the rate.
const kafkaLag = 10 * time.Second

// open sends n tasks at rate (open loop) and waits for their results. It
// reports whether the system could not keep the rate (the round's
// percentiles are then lower bounds).
func (s *kafkaSession) open(ctx context.Context, rate float64, n int) (round *kafkaRound, lagging bool, err error) {
	round = s.rig.newRound(n, rate)
	openLoop(ctx, round.rec, n, false, func(i int) { s.rig.send(ctx, round, i) })
	err = s.rig.await(ctx, round, kafkaLag)
	lagging = errors.Is(err, errLagging)
	if lagging {
		err = nil
	}
	return round, lagging, errors.Join(err, round.check())
}

// closed sends n tasks, inFlight at a time (closed loop), and waits for
// their results.
func (s *kafkaSession) closed(ctx context.Context, inFlight, n int) (*kafkaRound, error) {
	round := s.rig.newRound(n, 0)
	// A stalled system would hold the loop on its next answer for ever.
	loopCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	closedLoop(loopCtx, round.rec, n, inFlight, func(i int) { s.rig.send(ctx, round, i) })
	err := s.rig.await(ctx, round, kafkaLag)
	if errors.Is(err, errLagging) {
		err = fmt.Errorf("results more than %s behind in a closed loop: %w", kafkaLag, err)
	}
	return round, errors.Join(err, round.check())
}

// kafkaSide names a side of a comparison in messages.
func kafkaSide(raw bool) string {
	if raw {
		return "raw-kafka"
	}
	return "executor"
}

// kafkaLatencyTasks is the number of tasks of an open-loop run at rate:
// about 10 s of load (3 s in smoke mode), at most 50,000.
func kafkaLatencyTasks(rate float64, smoke bool) int {
	seconds := 10.0
	if smoke {
		seconds = 3
	}
	return min(int(rate*seconds), 50_000)
}

// runKafkaLatency measures open-loop latency at each rate, the executor
// and the raw baseline each against a fresh cluster, alternating which
// goes first from one rate to the next so that neither always runs on the
// warmer machine.
func runKafkaLatency(ctx context.Context, o *options) ([]Row, error) {
	rates := []float64{100, 1000, 10000}
	if o.smoke {
		rates = []float64{1000}
	}
	var rows []Row
	for k, rate := range rates {
		n := kafkaLatencyTasks(rate, o.smoke)
		order := []bool{false, true}
		if k%2 == 1 {
			order = []bool{true, false}
		}
		rounds := map[bool]*kafkaRound{}
		lagging := map[bool]bool{}
		for _, raw := range order {
			s, err := openKafkaSession(ctx, o, raw)
			if err != nil {
				return rows, fmt.Errorf("%s @ %.0f/s: %w", kafkaSide(raw), rate, err)
			}
			round, lag, err := s.open(ctx, rate, n)
			if err = errors.Join(err, s.close()); err != nil {
				return rows, fmt.Errorf("%s @ %.0f/s: %w", kafkaSide(raw), rate, err)
			}
			rounds[raw], lagging[raw] = round, lag
		}
		rows = append(rows, kafkaLatencyRows(rate, n, rounds[false], rounds[true], lagging)...)
	}
	if len(rows) > 0 {
		rows[0].Note += "; " + kafkaSettingsNote
	}
	return rows, nil
}

// kafkaLatencyRows turns one rate's two rounds into rows.
func kafkaLatencyRows(rate float64, n int, exec, raw *kafkaRound, lagging map[bool]bool) []Row {
	e, b := exec.rec.percentiles(), raw.rec.percentiles()
	name := func(p string) string { return fmt.Sprintf("kafka @ %.0f/s %s", rate, p) }
	note := fmt.Sprintf("%d tasks, answered at %s/s (raw %s/s); result %.0f B (raw %.0f B); duplicates %d (raw %d)",
		n, served(exec, lagging[false]), served(raw, lagging[true]), exec.resultSize(), raw.resultSize(), exec.dups.Load(), raw.dups.Load())
	for side, lag := range lagging {
		if lag {
			note += fmt.Sprintf("; %s could not keep the rate (results over %s behind): its figures are lower bounds", kafkaSide(side), kafkaLag)
		}
	}
	row := func(p string, v, base float64, target Target, note string) Row {
		return Row{Section: kafkaLatencySection, Name: name(p), Unit: "ms", Value: v, Baseline: base, Target: target, Note: note}
	}
	return []Row{
		row("p50", e.P50, b.P50, Target{RatioAtMost, 1.2}, note),
		row("p90", e.P90, b.P90, Target{}, ""),
		withTail(row("p99", e.P99, b.P99, Target{RatioAtMost, 1.2}, "")),
		row("p99.9", e.P999, b.P999, Target{}, ""),
		row("max", e.Max, b.Max, Target{}, ""),
	}
}

// served is the rate at which a round's tasks were answered, from the
// first send to the last first answer; a system that fell behind the
// schedule answers below the rate it was sent.
func served(r *kafkaRound, lagging bool) string {
	if lagging {
		return "?"
	}
	return fmt.Sprintf("%.0f", r.rec.throughput())
}

// kafkaThroughputTasks is the number of tasks of a closed-loop run with
// inFlight outstanding.
func kafkaThroughputTasks(inFlight int, smoke bool) int {
	switch {
	case inFlight == 1:
		return 2000
	case smoke:
		return 15_000
	default:
		return 50_000
	}
}

// kafkaCostLevel is the closed-loop depth at which CPU and allocations per
// task are measured: a saturated run.
const kafkaCostLevel = 64

// kafkaSweep is one side's closed-loop results.
type kafkaSweep struct {
	throughput map[int]float64 // tasks/s by tasks in flight
	cpu        float64         // µs of CPU per task at kafkaCostLevel
	mallocs    float64         // heap allocations per task at kafkaCostLevel
	// delivery says how the executor delivered results at kafkaCostLevel,
	// from its own metrics (empty for the baseline).
	delivery string
}

// runKafkaThroughput measures saturated throughput at each depth, then CPU
// and allocations per task at kafkaCostLevel, for the executor and then
// the raw baseline, each against a fresh cluster.
func runKafkaThroughput(ctx context.Context, o *options) ([]Row, error) {
	levels := []int{1, 8, 64, 256}
	if o.smoke {
		levels = []int{kafkaCostLevel}
	}
	sweeps := map[bool]*kafkaSweep{}
	for _, raw := range []bool{false, true} {
		sweep, err := kafkaThroughputSweep(ctx, o, raw, levels)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kafkaSide(raw), err)
		}
		sweeps[raw] = sweep
	}
	exec, raw := sweeps[false], sweeps[true]
	var rows []Row
	for _, level := range levels {
		target := Target{}
		if level == kafkaCostLevel {
			target = Target{RatioAtLeast, 0.85}
		}
		rows = append(rows, Row{Section: kafkaThroughputSection, Name: fmt.Sprintf("kafka @ %d in flight", level), Unit: "tasks/s",
			Value: exec.throughput[level], Baseline: raw.throughput[level], Target: target,
			Note: fmt.Sprintf("%d tasks", kafkaThroughputTasks(level, o.smoke))})
	}
	rows = append(rows,
		Row{Section: kafkaThroughputSection, Name: fmt.Sprintf("kafka CPU per task @ %d in flight", kafkaCostLevel), Unit: "µs",
			Value: exec.cpu, Baseline: raw.cpu, Note: "process CPU (user+system, 10 ms ticks) over the run / tasks"},
		Row{Section: kafkaThroughputSection, Name: fmt.Sprintf("kafka allocations per task @ %d in flight", kafkaCostLevel), Unit: "allocs",
			Value: exec.mallocs, Baseline: raw.mallocs, Note: "executor: go_memstats_mallocs_total; raw: runtime.MemStats.Mallocs"},
	)
	rows[0].Note += "; " + kafkaSettingsNote
	for i := range rows {
		if rows[i].Name == fmt.Sprintf("kafka @ %d in flight", kafkaCostLevel) {
			rows[i].Note += "; " + exec.delivery
		}
	}
	return rows, nil
}

// kafkaThroughputSweep runs one side's closed loops in one session.
func kafkaThroughputSweep(ctx context.Context, o *options, raw bool, levels []int) (*kafkaSweep, error) {
	s, err := openKafkaSession(ctx, o, raw)
	if err != nil {
		return nil, err
	}
	sweep := &kafkaSweep{throughput: map[int]float64{}}
	for _, level := range levels {
		n := kafkaThroughputTasks(level, o.smoke)
		var cpu0, cpu1 time.Duration
		var mallocs0, mallocs1 float64
		measure := level == kafkaCostLevel
		if measure {
			if cpu0, mallocs0, err = s.cost(); err != nil {
				return nil, errors.Join(err, s.close())
			}
		}
		var before deliveryStats
		if measure && s.sut.svc != nil {
			before = readDeliveryStats(s.sut.svc)
		}
		round, err := s.closed(ctx, level, n)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%d in flight: %w", level, err), s.close())
		}
		if measure && s.sut.svc != nil {
			sweep.delivery = readDeliveryStats(s.sut.svc).since(before)
		}
		sweep.throughput[level] = round.rec.throughput()
		if measure {
			if cpu1, mallocs1, err = s.cost(); err != nil {
				return nil, errors.Join(err, s.close())
			}
			sweep.cpu = float64((cpu1-cpu0)/time.Microsecond) / float64(n)
			sweep.mallocs = (mallocs1 - mallocs0) / float64(n)
		}
	}
	return sweep, s.close()
}

// deliveryStats are the executor's result-delivery metrics at one moment.
type deliveryStats struct {
	batches, results, seconds float64
	err                       error
}

// readDeliveryStats reads the executor's result-delivery metrics: Deliver
// calls acknowledged, results in them, and the summed time from each
// batch's oldest completion to its acknowledgement.
func readDeliveryStats(svc *service) deliveryStats {
	batches, err1 := svc.metric("gamelan_executor_result_delivery_seconds_count")
	seconds, err2 := svc.metric("gamelan_executor_result_delivery_seconds_sum")
	results, err3 := svc.metric("gamelan_executor_results_delivered_total")
	return deliveryStats{batches: batches, results: results, seconds: seconds, err: errors.Join(err1, err2, err3)}
}

// since describes the deliveries between before and d.
func (d deliveryStats) since(before deliveryStats) string {
	batches := d.batches - before.batches
	if err := errors.Join(before.err, d.err); err != nil || batches <= 0 {
		return fmt.Sprintf("delivery metrics unavailable: %v", err)
	}
	return fmt.Sprintf("executor's deliveries: %.0f batches of %.1f results on average, %.2f ms from a batch's oldest completion to its acknowledgement on average",
		batches, (d.results-before.results)/batches, (d.seconds-before.seconds)/batches*1000)
}

// cost reads the system under test's CPU time and allocation count.
func (s *kafkaSession) cost() (time.Duration, float64, error) {
	cpu, err := s.sut.p.cpuTime()
	if err != nil {
		return 0, 0, err
	}
	mallocs, err := s.sut.mallocs()
	return cpu, mallocs, err
}
