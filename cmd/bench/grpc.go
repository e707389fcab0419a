package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The gRPC scenarios: the executor service on each gRPC intake (push,
// StreamTasks, ExecuteStream) against the harness's lean engine
// (grpc_engine.go), beside a raw baseline of the same transport
// (grpc_raw.go) driven by the same engine with the same messages. The
// mechanics of a run are in grpc_run.go.

const (
	grpcLatencySection    = "Latency (open loop, gRPC)"
	grpcThroughputSection = "Throughput (closed loop, gRPC)"
)

func init() {
	for _, transport := range []string{"push", "stream", "bidi"} {
		register(scenario{name: "latency/" + transport, smoke: true, run: func(ctx context.Context, o *options) ([]Row, error) {
			return grpcLatency(ctx, o, transport)
		}})
	}
	for _, transport := range []string{"push", "stream", "bidi"} {
		register(scenario{name: "throughput/" + transport, smoke: true, run: func(ctx context.Context, o *options) ([]Row, error) {
			return grpcThroughput(ctx, o, transport)
		}})
	}
}

// grpcLatency measures latency at fixed rates, the service and its
// baseline in alternating rounds.
func grpcLatency(ctx context.Context, o *options, transport string) (rows []Row, err error) {
	b, err := startGRPCBench(ctx, o, transport)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.close()) }()
	rates := []int{100, 1000, 10000}
	rounds := 4
	if o.smoke {
		rates, rounds = []int{1000}, 2
	}
	for k, rate := range rates {
		n := latencyTasks(rate, o.smoke) / rounds
		svc, raw, err := b.rounds(k, rounds, func(s *grpcSide) (*grpcRun, error) {
			if _, err := s.measure(ctx, clamp(rate/4, 20, 1000), float64(rate), 0); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
			return s.measure(ctx, n, float64(rate), 0)
		})
		if err != nil {
			return rows, fmt.Errorf("%s @ %d/s: %w", transport, rate, err)
		}
		rows = append(rows, latencyRows(transport, rate, svc, raw)...)
	}
	return rows, nil
}

// latencyTasks is how many tasks a latency measurement sends to each side:
// about 10 s of load (3 s in smoke mode), at most 50,000.
func latencyTasks(rate int, smoke bool) int {
	if smoke {
		return rate * 3
	}
	return min(rate*10, 50_000)
}

func latencyRows(transport string, rate int, svc, raw grpcSeries) []Row {
	s, r := svc.percentiles(), raw.percentiles()
	name := fmt.Sprintf("%s @ %d/s", transport, rate)
	note := svc.describe() + svc.note() + raw.note()
	row := func(suffix string, value, baseline float64, target Target, note string) Row {
		return Row{Section: grpcLatencySection, Name: name + " " + suffix, Unit: "ms", Value: value, Baseline: baseline, Target: target, Note: note}
	}
	return []Row{
		row("p50", s.P50, r.P50, Target{RatioAtMost, 1.1}, note),
		row("p90", s.P90, r.P90, Target{}, ""),
		withTail(row("p99", s.P99, r.P99, Target{RatioAtMost, 1.2}, "")),
		row("p99.9", s.P999, r.P999, Target{}, ""),
		row("max", s.Max, r.Max, Target{}, ""),
	}
}

// grpcThroughput measures saturated throughput with a fixed number of
// tasks in flight, and at 64 in flight the CPU and allocations per task.
func grpcThroughput(ctx context.Context, o *options, transport string) (rows []Row, err error) {
	b, err := startGRPCBench(ctx, o, transport)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.close()) }()
	levels := []int{1, 8, 64, 256}
	if o.smoke {
		levels = []int{64}
	}
	const rounds = 2
	for k, inFlight := range levels {
		n := throughputTasks(inFlight, o.smoke) / rounds
		costed := inFlight == 64
		svc, raw, err := b.rounds(k, rounds, func(s *grpcSide) (*grpcRun, error) {
			if _, err := s.measure(ctx, clamp(n/10, 100, 1000), 0, inFlight); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
			if costed {
				return s.measureCost(ctx, n, inFlight)
			}
			return s.measure(ctx, n, 0, inFlight)
		})
		if err != nil {
			return rows, fmt.Errorf("%s @ %d in flight: %w", transport, inFlight, err)
		}
		target := Target{}
		if costed {
			target = Target{RatioAtLeast, 0.85}
		}
		rows = append(rows, Row{Section: grpcThroughputSection, Name: fmt.Sprintf("%s @ %d in flight", transport, inFlight), Unit: "tasks/s",
			Value: svc.throughput(), Baseline: raw.throughput(), Target: target, Note: svc.describe() + svc.note() + raw.note()})
		if costed {
			rows = append(rows,
				Row{Section: grpcThroughputSection, Name: transport + " CPU per task", Unit: "µs",
					Value: svc.cpuPerTask(), Baseline: raw.cpuPerTask(), Note: "the whole process (user + system), over the 64-in-flight runs"},
				Row{Section: grpcThroughputSection, Name: transport + " allocations per task", Unit: "allocs",
					Value: svc.allocsPerTask(), Baseline: raw.allocsPerTask(), Note: "heap allocations (runtime.MemStats.Mallocs), over the 64-in-flight runs"})
		}
	}
	return rows, nil
}

// throughputTasks is how many tasks a closed-loop measurement sends to
// each side: a few seconds of load at the rates this machine reaches.
func throughputTasks(inFlight int, smoke bool) int {
	switch {
	case smoke:
		return 30_000
	case inFlight == 1:
		return 5_000
	case inFlight < 64:
		return 20_000
	default:
		return 50_000
	}
}

func clamp(v, lo, hi int) int { return max(lo, min(v, hi)) }

// grpcSeries is one side's runs of one measurement (its rounds), taken
// together.
type grpcSeries []*grpcRun

func (s grpcSeries) percentiles() Percentiles {
	recs := make([]*recorder, len(s))
	for i, run := range s {
		recs[i] = run.rec
	}
	return mergedPercentiles(recs...)
}

// throughput is the tasks answered over the time the runs took.
func (s grpcSeries) throughput() float64 {
	var answered int
	var elapsed time.Duration
	for _, run := range s {
		answered += run.rec.count()
		elapsed += run.elapsed()
	}
	return float64(answered) / elapsed.Seconds()
}

// cpuPerTask is in µs, over the runs that measured it.
func (s grpcSeries) cpuPerTask() float64 {
	var cpu time.Duration
	var answered int
	for _, run := range s {
		cpu += run.cpu
		answered += run.rec.count()
	}
	return float64(cpu.Microseconds()) / float64(answered)
}

func (s grpcSeries) allocsPerTask() float64 {
	var mallocs float64
	var answered int
	for _, run := range s {
		mallocs += run.mallocs
		answered += run.rec.count()
	}
	return mallocs / float64(answered)
}

// describe says how the measurement was made.
func (s grpcSeries) describe() string {
	return fmt.Sprintf("%d tasks a side in %d alternating rounds", len(s)*s[0].n, len(s))
}

// note sums up what the reader must know of the side's runs: refusals,
// duplicates, a rate it could not keep.
func (s grpcSeries) note() string {
	var refused, duplicates int64
	var unanswered, tasks int
	refusal := ""
	for _, run := range s {
		if refusal == "" {
			refusal = run.refusalText()
		}
		refused += run.refused.Load()
		duplicates += run.duplicates.Load()
		unanswered += run.unanswered
		tasks += run.n
	}
	var parts []string
	if refused > 0 {
		parts = append(parts, fmt.Sprintf("%d pushes refused and sent again%s", refused, refusal))
	}
	if duplicates > 0 {
		parts = append(parts, fmt.Sprintf("%d duplicate results", duplicates))
	}
	if unanswered > 0 {
		parts = append(parts, fmt.Sprintf("could not keep up: %d of %d tasks unanswered at the deadline (counted with the latency they had reached, a lower bound)", unanswered, tasks))
	} else if rate := s[0].rate; rate > 0 && s.throughput() < 0.95*rate {
		// Its results came slower than its tasks were sent: its latencies
		// grew with a backlog rather than measuring one task's way.
		parts = append(parts, fmt.Sprintf("fell behind: results came at %.0f/s on average, tasks were sent at %.0f/s", s.throughput(), rate))
	}
	if len(parts) == 0 {
		return ""
	}
	who := "executor"
	if s[0].side.svc == nil {
		who = "raw"
	}
	return "; " + who + ": " + strings.Join(parts, ", ")
}
