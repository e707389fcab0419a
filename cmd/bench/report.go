package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Target is what a figure must reach for its row to hold. A ratio target
// compares the figure with its baseline measured in the same run; an
// absolute target compares the figure itself.
type Target struct {
	Kind  TargetKind
	Limit float64
}

// TargetKind says how a Target compares.
type TargetKind int

const (
	NoTarget     TargetKind = iota
	RatioAtMost             // figure/baseline <= Limit (latency, memory)
	RatioAtLeast            // figure/baseline >= Limit (throughput)
	AtMost                  // figure <= Limit
)

// Row is one line of the table: a figure, its baseline of the same shape
// from the same invocation (0 when it has none), and its target.
type Row struct {
	Section  string // the table it belongs to, e.g. "Latency (open loop)"
	Name     string // what was measured, e.g. "push @ 1000/s p99"
	Unit     string // "ms", "tasks/s", "KiB", "allocs", "µs", "% of a core"
	Value    float64
	Baseline float64
	Target   Target
	Tail     bool   // a tail percentile: reported in smoke mode, never gating it (see gates)
	Note     string // anything the reader needs to read the figure
}

// withTail marks r as a tail percentile.
func withTail(r Row) Row {
	r.Tail = true
	return r
}

// Ratio is Value/Baseline, or 0 without a baseline.
func (r Row) Ratio() float64 {
	if r.Baseline == 0 {
		return 0
	}
	return r.Value / r.Baseline
}

// Holds reports whether the row meets its target with the given margin
// (0 for the real target; smoke mode passes a looser one, e.g. 0.5 lets a
// ratio of at most 1.1 reach 1.65 and one of at least 0.85 fall to 0.425).
func (r Row) Holds(margin float64) bool {
	switch r.Target.Kind {
	case RatioAtMost:
		return r.Baseline > 0 && r.Ratio() <= r.Target.Limit*(1+margin)
	case RatioAtLeast:
		return r.Baseline > 0 && r.Ratio() >= r.Target.Limit*(1-margin)
	case AtMost:
		return r.Value <= r.Target.Limit*(1+margin)
	}
	return true
}

// gates reports whether a miss of this row fails a smoke run. Two kinds of
// row are reported without failing it: an absolute target the bare baseline
// misses too (see baselineMisses), and a tail percentile. A smoke latency run
// sends 3,000 tasks, so its p99 rests on 30 of them, and on a shared 2-core
// machine one neighbour's burst moves it by 2x on either side; the smoke run
// gates on the medians and the throughput ratios, which a regression moves
// as surely, and the full run reports the tails against their targets.
func (r Row) gates() bool {
	return !r.Tail && !r.baselineMisses()
}

// baselineMisses reports whether the row's bare baseline itself misses an
// absolute target: then this machine cannot meet it whatever the runtime
// does (500 heartbeats a second cost a bare grpc-go server more than 5% of
// a core here), so the smoke run reports the miss without failing on it.
func (r Row) baselineMisses() bool {
	return r.Target.Kind == AtMost && r.Baseline > r.Target.Limit
}

func (t Target) String() string {
	switch t.Kind {
	case RatioAtMost:
		return fmt.Sprintf("<= %.2fx", t.Limit)
	case RatioAtLeast:
		return fmt.Sprintf(">= %.2fx", t.Limit)
	case AtMost:
		return fmt.Sprintf("<= %s", trim(t.Limit))
	}
	return ""
}

// trim prints a figure with the precision its size deserves.
func trim(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// writeTable prints rows as Markdown tables, one per section, in the order
// the sections first appear.
func writeTable(w io.Writer, rows []Row, margin float64) {
	var sections []string
	for _, r := range rows {
		if !slices.Contains(sections, r.Section) {
			sections = append(sections, r.Section)
		}
	}
	for _, s := range sections {
		fmt.Fprintf(w, "\n### %s\n\n", s)
		fmt.Fprintln(w, "| Measure | Executor | Baseline | Ratio | Target | Holds | Note |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---|---|---|")
		for _, r := range rows {
			if r.Section != s {
				continue
			}
			base, ratio, holds := "", "", ""
			if r.Baseline != 0 {
				base = trim(r.Baseline) + " " + r.Unit
				ratio = fmt.Sprintf("%.2fx", r.Ratio())
			}
			if r.Target.Kind != NoTarget {
				holds = "yes"
				if !r.Holds(margin) {
					holds = "**no**"
					switch {
					case r.baselineMisses():
						holds = "**no** (nor does the baseline)"
					case r.Tail && margin > 0:
						holds = "**no** (a tail: not gated in smoke mode)"
					}
				}
			}
			fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s | %s | %s |\n",
				r.Name, trim(r.Value), r.Unit, base, ratio, r.Target, holds, r.Note)
		}
	}
}

// environment describes the machine the figures come from: they hold for
// it only.
func environment() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s %s/%s, GOMAXPROCS=%d, %s",
		cpu, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}
