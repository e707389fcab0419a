package testkit

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// ReportFileVar names the environment variable that, when set to a file
// path, makes every Outcome.Report append its outcome there as one JSON
// line. `make test-faults` sets it; docs/reliability figures come from it.
const ReportFileVar = "GAMELAN_FAULTS_REPORT"

// LongVar names the environment variable that selects the long variants
// of the fault scenarios (`make test-faults` sets it to 1).
const LongVar = "GAMELAN_FAULTS_LONG"

// Long reports whether the long variants of the fault scenarios run.
func Long() bool { return os.Getenv(LongVar) == "1" }

// Pick returns long when the long variants run, short otherwise.
func Pick[T any](short, long T) T {
	if Long() {
		return long
	}
	return short
}

// Outcome counts what a fault scenario did: tasks submitted, results
// received, and how long the service took to recover from the fault.
// A scenario fills it in as it goes (Submitted, Answer are safe for
// concurrent use) and ends with Check, which fails the test on any lost
// task and reports the figures.
type Outcome struct {
	// Scenario names the scenario in reports ("engine restart, push").
	Scenario string
	// Recovery is the time from the end of the fault (the engine back,
	// the partition healed, the signal sent) to the first result after
	// it, or whatever the scenario documents it measures. Zero when the
	// scenario has no single fault to recover from.
	Recovery time.Duration
	// Notes adds scenario-specific figures to the report ("handed back": 12).
	Notes map[string]any

	mu        sync.Mutex
	submitted map[string]bool
	answers   map[string]int
}

// Submitted records that the task with key was handed to the system.
// A key submitted twice counts once.
func (o *Outcome) Submitted(keys ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.submitted == nil {
		o.submitted = make(map[string]bool)
	}
	for _, k := range keys {
		o.submitted[k] = true
	}
}

// Answer records one result received for the task with key. Every result
// counts, so that a key answered twice is a duplicate.
func (o *Outcome) Answer(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.answers == nil {
		o.answers = make(map[string]int)
	}
	o.answers[key]++
}

// AnswerCount sets the number of results received for key, for scenarios
// that read final counts from an engine rather than watch results arrive.
func (o *Outcome) AnswerCount(key string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.answers == nil {
		o.answers = make(map[string]int)
	}
	o.answers[key] = n
}

// Figures are an Outcome's counts.
type Figures struct {
	Scenario   string         `json:"scenario"`
	Package    string         `json:"package"`
	Test       string         `json:"test"`
	Long       bool           `json:"long"`
	Submitted  int            `json:"submitted"`
	Answered   int            `json:"answered"`
	Lost       int            `json:"lost"`
	Duplicates int            `json:"duplicates"`
	Unexpected int            `json:"unexpected"`
	RecoveryMS int64          `json:"recoveryMs"`
	Notes      map[string]any `json:"notes,omitempty"`
	At         string         `json:"at"`
}

// Figures returns the counts so far: answered counts submitted tasks with
// at least one result, lost those with none, duplicates the results
// beyond the first, unexpected the results of tasks never submitted.
func (o *Outcome) Figures() Figures {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := Figures{Scenario: o.Scenario, Long: Long(), Submitted: len(o.submitted),
		RecoveryMS: o.Recovery.Milliseconds(), Notes: o.Notes, At: time.Now().UTC().Format(time.RFC3339)}
	for k := range o.submitted {
		n := o.answers[k]
		if n == 0 {
			f.Lost++
			continue
		}
		f.Answered++
		f.Duplicates += n - 1
	}
	for k, n := range o.answers {
		if !o.submitted[k] {
			f.Unexpected += n
		}
	}
	return f
}

// Lost returns the keys of submitted tasks without a result, sorted.
func (o *Outcome) Lost() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var lost []string
	for k := range o.submitted {
		if o.answers[k] == 0 {
			lost = append(lost, k)
		}
	}
	sort.Strings(lost)
	return lost
}

// Check reports the figures (in the test's log, and in the file
// GAMELAN_FAULTS_REPORT names) and fails the test if a task was lost, a
// result answered a task never submitted, or nothing was submitted at all.
func (o *Outcome) Check(t testing.TB) Figures {
	t.Helper()
	f := o.Figures()
	f.Test = t.Name()
	f.Package = packageDir()
	line, err := json.Marshal(f)
	if err != nil {
		t.Fatalf("outcome: %v", err)
	}
	t.Logf("OUTCOME %s", line)
	if path := os.Getenv(ReportFileVar); path != "" {
		if err := appendLine(path, line); err != nil {
			t.Errorf("outcome: write %s: %v", path, err)
		}
	}
	if f.Submitted == 0 {
		t.Errorf("%s: no task was submitted, so the scenario proves nothing", o.Scenario)
	}
	if f.Lost > 0 {
		lost := o.Lost()
		if len(lost) > 20 {
			lost = append(lost[:20], fmt.Sprintf("... %d more", len(lost)-20))
		}
		t.Errorf("%s: %d of %d tasks lost: %v", o.Scenario, f.Lost, f.Submitted, lost)
	}
	if f.Unexpected > 0 {
		t.Errorf("%s: %d results for tasks never submitted", o.Scenario, f.Unexpected)
	}
	return f
}

// packageDir returns the test's package directory relative to the module
// root ("./test/faults/network"): go test runs a test in its package's
// directory, so the report can name the command that reruns it.
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return ""
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			rel, err := filepath.Rel(dir, wd)
			if err != nil {
				return ""
			}
			return "./" + filepath.ToSlash(rel)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

var reportMu sync.Mutex

func appendLine(path string, line []byte) error {
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
