package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

func init() {
	register(scenario{name: "core", smoke: true, run: runCore})
}

// coreBenchmarks are internal/app's benchmarks, each runtime figure beside
// its bare baseline: the whole runtime path (Offer, dedupe, routing,
// scheduling, Invoke, outbox, settle) with a trivial handler and a sink
// that acknowledges at once, against a channel-fed pool of the same size;
// and one task on an idle runtime against two bare goroutine hand-offs.
const coreBenchmarks = "^Benchmark(RuntimeThroughput|BaselineWorkerPool|RuntimeLatencyIdle|BaselineLatencyIdle)$"

// runCore runs the runtime core's Go benchmarks (the source tree and the go
// command are needed: make bench runs from the repository) and reads their
// medians.
func runCore(ctx context.Context, o *options) ([]Row, error) {
	count := "6"
	if o.smoke {
		count = "3"
	}
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", coreBenchmarks, "-benchmem", "-count", count, "./internal/app/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench ./internal/app: %w\n%s", err, out.String())
	}
	m := parseBenchmarks(out.String())
	get := func(bench, unit string) float64 { return median(m[bench][unit]) }
	const section = "Runtime core (go test -bench ./internal/app)"
	note := "median of " + count + " runs"
	return []Row{
		{Section: section, Name: "throughput, 50 workers, trivial handler", Unit: "tasks/s",
			Value: get("RuntimeThroughput", "tasks/s"), Baseline: get("BaselineWorkerPool", "tasks/s"),
			Target: Target{RatioAtLeast, 0.35}, Note: note + "; baseline: a bare channel-fed pool of 50"},
		{Section: section, Name: "allocations per task", Unit: "allocs",
			Value: get("RuntimeThroughput", "allocs/op"), Baseline: get("BaselineWorkerPool", "allocs/op"),
			Target: Target{AtMost, 16}},
		{Section: section, Name: "bytes allocated per task", Unit: "B",
			Value: get("RuntimeThroughput", "B/op"), Baseline: get("BaselineWorkerPool", "B/op")},
		{Section: section, Name: "one task on an idle runtime", Unit: "µs",
			Value: get("RuntimeLatencyIdle", "ns/op") / 1000, Baseline: get("BaselineLatencyIdle", "ns/op") / 1000,
			Note: "offer, run, deliver to the sink; baseline: two bare goroutine hand-offs"},
	}, nil
}

// parseBenchmarks reads `go test -bench` output into benchmark name (without
// the Benchmark prefix and the -GOMAXPROCS suffix) -> unit -> values.
func parseBenchmarks(out string) map[string]map[string][]float64 {
	m := map[string]map[string][]float64{}
	scanner := bufio.NewScanner(strings.NewReader(out))
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(fields[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		if m[name] == nil {
			m[name] = map[string][]float64{}
		}
		// fields[1] is the iteration count; then value-unit pairs.
		for i := 2; i+1 < len(fields); i += 2 {
			if v, err := strconv.ParseFloat(fields[i], 64); err == nil {
				m[name][fields[i+1]] = append(m[name][fields[i+1]], v)
			}
		}
	}
	return m
}

func median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	s := slices.Clone(values)
	slices.Sort(s)
	return s[len(s)/2]
}
