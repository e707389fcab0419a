package main

import (
	"context"
	"math"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildExecutor builds the executor binary into a temporary directory.
func buildExecutor(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to build the executor binary with")
	}
	path := filepath.Join(t.TempDir(), "executor")
	out, err := exec.Command(goTool, "build", "-o", path, "github.com/gamelan-go/executor/cmd/executor").CombinedOutput()
	if err != nil {
		t.Fatalf("build the executor: %v\n%s", err, out)
	}
	return path
}

// TestKafkaLatencyScenario runs a tiny open-loop Kafka run end to end, the
// executor binary and then its raw baseline each against a kfake cluster
// of their own, and checks that every task was answered, COMPLETED, with
// results of one size on both sides, and that the rows compare them.
func TestKafkaLatencyScenario(t *testing.T) {
	o := &options{executor: buildExecutor(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n, rate = 200, 400.0
	rounds := map[bool]*kafkaRound{}
	for _, raw := range []bool{false, true} {
		s, err := openKafkaSession(ctx, o, raw)
		if err != nil {
			t.Fatalf("%s: %v", kafkaSide(raw), err)
		}
		round, lagging, err := s.open(ctx, rate, n)
		if closeErr := s.close(); closeErr != nil {
			t.Errorf("%s: stop: %v", kafkaSide(raw), closeErr)
		}
		if err != nil {
			t.Fatalf("%s: %v", kafkaSide(raw), err)
		}
		if lagging {
			t.Errorf("%s could not keep %v tasks/s", kafkaSide(raw), rate)
		}
		if got := round.seenCount.Load(); got != n {
			t.Errorf("%s: %d of %d tasks answered", kafkaSide(raw), got, n)
		}
		rounds[raw] = round
	}
	// The completion time's digits vary (trailing zeros of the nanoseconds
	// are not written), so the mean sizes agree within a byte or two.
	if e, b := rounds[false].resultSize(), rounds[true].resultSize(); e == 0 || math.Abs(e-b) > 2 {
		t.Errorf("result records differ in size: executor %.1f B, raw %.1f B", e, b)
	}
	rows := kafkaLatencyRows(rate, n, rounds[false], rounds[true], map[bool]bool{})
	for _, r := range rows {
		if r.Value <= 0 || r.Baseline <= 0 || r.Ratio() <= 0 {
			t.Errorf("row %q: value %v, baseline %v, ratio %v: want all above 0", r.Name, r.Value, r.Baseline, r.Ratio())
		}
	}
}
