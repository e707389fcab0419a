package devengine

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"time"
)

// Summary describes a set of tasks: how many, how they ended, how fast.
type Summary struct {
	Tasks          int                      `json:"tasks"`
	ByState        map[string]int           `json:"byState"`
	FailuresByCode map[string]int           `json:"failuresByCode"`
	ByTransport    map[string]TransportStat `json:"byTransport"`
	Counters       Counters                 `json:"counters"`
}

// TransportStat is the latency and throughput of the tasks answered over
// one transport (grpc-push, grpc-stream, grpc-bidi, kafka, rest).
type TransportStat struct {
	Answered       int     `json:"answered"`
	P50Ms          float64 `json:"p50Ms"`
	P99Ms          float64 `json:"p99Ms"`
	TasksPerSecond float64 `json:"tasksPerSecond"`
}

// Summarize summarizes tasks.
func Summarize(tasks []Task, counters Counters) Summary {
	s := Summary{Tasks: len(tasks), ByState: map[string]int{}, FailuresByCode: map[string]int{},
		ByTransport: map[string]TransportStat{}, Counters: counters}
	latencies := map[string][]float64{}
	first, last := map[string]time.Time{}, map[string]time.Time{}
	for _, t := range tasks {
		s.ByState[t.State]++
		if t.Result != nil && t.Result.Error != nil {
			s.FailuresByCode[t.Result.Error.Code]++
		}
		if !t.Final() || t.Transport == "" {
			continue
		}
		latencies[t.Transport] = append(latencies[t.Transport], t.LatencyMs)
		if f, ok := first[t.Transport]; !ok || t.SubmittedAt.Before(f) {
			first[t.Transport] = t.SubmittedAt
		}
		if l := last[t.Transport]; t.CompletedAt.After(l) {
			last[t.Transport] = t.CompletedAt
		}
	}
	for transport, ls := range latencies {
		sort.Float64s(ls)
		stat := TransportStat{Answered: len(ls), P50Ms: percentile(ls, 0.50), P99Ms: percentile(ls, 0.99)}
		if span := last[transport].Sub(first[transport]).Seconds(); span > 0 {
			stat.TasksPerSecond = float64(len(ls)) / span
		}
		s.ByTransport[transport] = stat
	}
	return s
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Print writes the summary as a small table.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "tasks: %d\n", s.Tasks)
	for _, state := range slices.Sorted(maps.Keys(s.ByState)) {
		fmt.Fprintf(w, "  %-10s %d\n", state, s.ByState[state])
	}
	if len(s.FailuresByCode) > 0 {
		fmt.Fprintln(w, "failures by code:")
		for _, code := range slices.Sorted(maps.Keys(s.FailuresByCode)) {
			fmt.Fprintf(w, "  %-16s %d\n", code, s.FailuresByCode[code])
		}
	}
	fmt.Fprintln(w, "by transport:")
	fmt.Fprintf(w, "  %-12s %9s %10s %10s %10s\n", "transport", "answered", "tasks/s", "p50 ms", "p99 ms")
	for _, transport := range slices.Sorted(maps.Keys(s.ByTransport)) {
		st := s.ByTransport[transport]
		fmt.Fprintf(w, "  %-12s %9d %10.0f %10.1f %10.1f\n", transport, st.Answered, st.TasksPerSecond, st.P50Ms, st.P99Ms)
	}
	fmt.Fprintf(w, "duplicate results dropped: %d, refused calls: %d\n", s.Counters.Duplicates, s.Counters.Refused)
}
