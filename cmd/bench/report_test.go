package main

import "testing"

// TestSmokeGates pins which misses fail a smoke run: a median or throughput
// ratio does; a tail percentile and an absolute target the bare baseline
// misses too are reported without failing it.
func TestSmokeGates(t *testing.T) {
	const margin = 0.5
	cases := []struct {
		name     string
		row      Row
		holds    bool
		failsRun bool
	}{
		{"median within margin", Row{Value: 1.5, Baseline: 1, Target: Target{RatioAtMost, 1.1}}, true, false},
		{"median past margin", Row{Value: 1.7, Baseline: 1, Target: Target{RatioAtMost, 1.1}}, false, true},
		{"throughput past margin", Row{Value: 0.4, Baseline: 1, Target: Target{RatioAtLeast, 0.85}}, false, true},
		{"tail past margin", withTail(Row{Value: 2.0, Baseline: 1, Target: Target{RatioAtMost, 1.2}}), false, false},
		{"absolute the baseline misses", Row{Value: 20, Baseline: 17, Target: Target{AtMost, 5}}, false, false},
		{"absolute past margin", Row{Value: 160, Baseline: 0, Target: Target{AtMost, 100}}, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.row.Holds(margin); got != c.holds {
				t.Fatalf("Holds(%v) = %v, want %v", margin, got, c.holds)
			}
			if got := misses([]Row{c.row}, margin); got != c.failsRun {
				t.Fatalf("misses = %v, want %v", got, c.failsRun)
			}
		})
	}
}
