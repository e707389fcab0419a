package testkit

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestSumSamplesAddsEveryLabelSetOfTheMetric(t *testing.T) {
	text := `# HELP gamelan_executor_tasks_running Handlers running.
# TYPE gamelan_executor_tasks_running gauge
gamelan_executor_tasks_running{executor_type="a b"} 3
gamelan_executor_tasks_running{executor_type="c}"} 4 1700000000000
gamelan_executor_tasks_running_total 100
gamelan_executor_tasks_admitted 7
`
	if got, ok := sumSamples(text, "gamelan_executor_tasks_running"); !ok || got != 7 {
		t.Errorf("running: got %v %v, want 7 true", got, ok)
	}
	if got, ok := sumSamples(text, "gamelan_executor_tasks_admitted"); !ok || got != 7 {
		t.Errorf("admitted: got %v %v, want 7 true", got, ok)
	}
	if _, ok := sumSamples(text, "gamelan_executor_tasks"); ok {
		t.Error("a prefix of metric names matched")
	}
}

func TestProcessKeepsLinesAndExitStatus(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	p := Start(t, "sh", Command(sh, map[string]string{"WORD": "hello"},
		"-c", `echo '{"msg":"greeting","word":"'"$WORD"'"}'; echo plain text; echo oops >&2; exit 3`))
	line := p.WaitForLine(t, 10*time.Second, "greeting")
	if line["word"] != "hello" {
		t.Errorf("line %v: the environment did not reach the process", line)
	}
	p.WaitForText(t, 10*time.Second, "plain text")
	err = p.Wait(t, 10*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("exit: %v, want status 3", err)
	}
	if p.ExitedAt().IsZero() {
		t.Error("no exit time")
	}
	if got := p.Stderr(); got != "oops\n" {
		t.Errorf("stderr %q", got)
	}
}

func TestProcessSignal(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	p := Start(t, "sleep", Command(sleep, nil, "60"))
	p.Signal(t, syscall.SIGTERM)
	var exit *exec.ExitError
	if err := p.Wait(t, 10*time.Second); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("exit: %v, want killed by SIGTERM", err)
	}
}
