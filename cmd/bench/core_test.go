package main

import "testing"

// TestParseBenchmarks reads go test -bench lines, custom metrics included,
// and takes the median of repeated runs.
func TestParseBenchmarks(t *testing.T) {
	out := `goos: linux
BenchmarkRuntimeThroughput-2   	  200000	      5000 ns/op	    200000 tasks/s	     512 B/op	       7 allocs/op
BenchmarkRuntimeThroughput-2   	  200000	      4000 ns/op	    250000 tasks/s	     512 B/op	       7 allocs/op
BenchmarkRuntimeThroughput-2   	  200000	      6000 ns/op	    150000 tasks/s	     520 B/op	       8 allocs/op
BenchmarkBaselineWorkerPool-2  	 1000000	      1000 ns/op	   1000000 tasks/s	      96 B/op	       2 allocs/op
PASS
`
	m := parseBenchmarks(out)
	if got := median(m["RuntimeThroughput"]["tasks/s"]); got != 200000 {
		t.Errorf("median tasks/s = %v, want 200000", got)
	}
	if got := median(m["RuntimeThroughput"]["allocs/op"]); got != 7 {
		t.Errorf("median allocs/op = %v, want 7", got)
	}
	if got := m["BaselineWorkerPool"]["ns/op"]; len(got) != 1 || got[0] != 1000 {
		t.Errorf("baseline ns/op = %v, want [1000]", got)
	}
	if median(nil) != 0 {
		t.Error("median of nothing should be 0")
	}
}
