package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestGRPCLatencyEndToEnd runs a tiny latency measurement on each gRPC
// intake: the executor binary and the raw baseline as child processes
// against the lean engine, every task answered exactly once, every ratio
// computed, and the allocation counts read from both sides.
func TestGRPCLatencyEndToEnd(t *testing.T) {
	o := &options{executor: buildExecutor(t)}
	for _, transport := range []string{"push", "stream", "bidi"} {
		t.Run(transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			b, err := startGRPCBench(ctx, o, transport)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := b.close(); err != nil {
					t.Error(err)
				}
			}()
			const n = 150
			svc, raw, err := b.rounds(0, 2, func(s *grpcSide) (*grpcRun, error) { return s.measure(ctx, n, 1000, 0) })
			if err != nil {
				t.Fatal(err)
			}
			for _, run := range append(svc, raw...) {
				if got := run.rec.count(); got != n || run.unanswered != 0 {
					t.Errorf("%s: %d of %d tasks answered, %d cut short", run.side.executorID, got, n, run.unanswered)
				}
				if d := run.duplicates.Load(); d != 0 {
					t.Errorf("%s: %d duplicate results", run.side.executorID, d)
				}
			}
			for _, row := range latencyRows(transport, 1000, svc, raw) {
				if row.Value <= 0 || row.Ratio() <= 0 {
					t.Errorf("%s: value %v, baseline %v, ratio %v", row.Name, row.Value, row.Baseline, row.Ratio())
				}
			}
			// Allocations per task, closed loop: both sides report theirs.
			svc, raw, err = b.rounds(1, 1, func(s *grpcSide) (*grpcRun, error) { return s.measureCost(ctx, n, 8) })
			if err != nil {
				t.Fatal(err)
			}
			if transport == "bidi" {
				// Each side acknowledged each task on the stream, once.
				want := int64(2 * 3 * n)
				waitUntil(t, 5*time.Second, func() bool { return b.engine.acks.Load() >= want })
				if got := b.engine.acks.Load(); got != want {
					t.Errorf("%d acknowledgements on ExecuteStream, want %d", got, want)
				}
			}
			if svc.allocsPerTask() <= 0 || raw.allocsPerTask() <= 0 || svc.throughput() <= 0 || raw.throughput() <= 0 {
				t.Errorf("allocations per task: executor %v, raw %v; throughput: executor %v, raw %v",
					svc.allocsPerTask(), raw.allocsPerTask(), svc.throughput(), raw.throughput())
			}
		})
	}
}

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSeriesNoteSaysWhatTheReaderMustKnow checks the notes of a side's
// runs: nothing for a run that kept its rate, and a side that fell behind,
// refusals and duplicates when there were some.
func TestSeriesNoteSaysWhatTheReaderMustKnow(t *testing.T) {
	raw := &grpcSide{}
	// run is a run of n tasks sent at 100/s, all answered took after it
	// started.
	run := func(n int, took time.Duration) *grpcRun {
		r := &grpcRun{side: raw, n: n, rate: 100, rec: newRecorder(n, 100)}
		r.rec.start = time.Now().Add(-took)
		for i := range n {
			r.rec.answer(i)
		}
		return r
	}
	if note := (grpcSeries{run(100, time.Second)}).note(); note != "" {
		t.Errorf("a run that kept its rate: note %q, want none", note)
	}
	behind := run(100, 2*time.Second)
	behind.refused.Add(3)
	message := "503 full"
	behind.refusal.Store(&message)
	behind.duplicates.Add(2)
	note := (grpcSeries{run(100, time.Second), behind}).note()
	for _, want := range []string{"raw: ", "3 pushes refused and sent again, first: 503 full", "2 duplicate results", "fell behind: results came at 67/s"} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q does not say %q", note, want)
		}
	}
}
