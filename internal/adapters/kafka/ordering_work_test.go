package kafka_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// workIntake is a runtime for the ordering tests: it runs each task it
// takes in a goroutine of its own for a short random time, as a handler
// would, then settles it (nil: the result acknowledged), and records when
// each task of each key (its run id) started and finished. Tasks are named
// by their node id "step-<index>", index being the task's rank in its key.
type workIntake struct {
	capacity int
	delay    func() time.Duration
	// hold, when set, is asked about each task taken: a task it returns a
	// channel for is not settled before that channel is closed.
	hold func(task domain.Task) <-chan struct{}

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced at each change
	running    int
	maxRunning int
	byKey      map[string]int   // tasks running, per key
	overlaps   map[string]int   // tasks started while another of their key ran
	starts     map[string][]int // indices started, per key, in start order
	order      []string         // task keys (run:index) in start order
	finished   map[string]bool  // task keys settled at least once
	settled    int
	firstStart time.Time // when the first task started
	lastEnd    time.Time // when the last task ended
}

func newWorkIntake(capacity int, delay func() time.Duration) *workIntake {
	return &workIntake{capacity: capacity, delay: delay, changed: make(chan struct{}),
		byKey: map[string]int{}, overlaps: map[string]int{}, starts: map[string][]int{}, finished: map[string]bool{}}
}

// randomDelay returns a delay of lo to hi, uniformly.
func randomDelay(lo, hi time.Duration) func() time.Duration {
	return func() time.Duration { return lo + rand.N(hi-lo) }
}

// stepIndex returns the index of a task named "step-<index>".
func stepIndex(task domain.Task) int {
	i, err := strconv.Atoi(strings.TrimPrefix(task.NodeID, "step-"))
	if err != nil {
		panic(fmt.Sprintf("task %s is not a step", task.NodeID))
	}
	return i
}

// workKey names a task in the records: its run id and index.
func workKey(runID string, index int) string { return fmt.Sprintf("%s:%d", runID, index) }

func (w *workIntake) notifyLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// Offer implements ports.Intake.
func (w *workIntake) Offer(_ context.Context, d ports.Delivery) error {
	task := *d.Task
	w.mu.Lock()
	if w.running >= w.capacity {
		w.mu.Unlock()
		return fmt.Errorf("work intake: %w", domain.ErrOverloaded)
	}
	if w.firstStart.IsZero() {
		w.firstStart = time.Now()
	}
	w.running++
	w.maxRunning = max(w.maxRunning, w.running)
	if w.byKey[task.RunID] > 0 {
		w.overlaps[task.RunID]++
	}
	w.byKey[task.RunID]++
	w.starts[task.RunID] = append(w.starts[task.RunID], stepIndex(task))
	w.order = append(w.order, workKey(task.RunID, stepIndex(task)))
	w.notifyLocked()
	w.mu.Unlock()
	var held <-chan struct{}
	if w.hold != nil {
		held = w.hold(task)
	}
	go w.run(task, held, d.Settle)
	return nil
}

// run is one task's handler: it works, ends, then settles, so that the
// source releases the next task of the key only once this one has ended.
func (w *workIntake) run(task domain.Task, held <-chan struct{}, settle func(error)) {
	time.Sleep(w.delay()) // the handler's work, not a wait for something
	if held != nil {
		<-held
	}
	w.mu.Lock()
	w.running--
	w.byKey[task.RunID]--
	w.finished[workKey(task.RunID, stepIndex(task))] = true
	w.settled++
	w.lastEnd = time.Now()
	w.notifyLocked()
	w.mu.Unlock()
	settle(nil)
}

// AwaitCapacity implements ports.Intake.
func (w *workIntake) AwaitCapacity(ctx context.Context) (int, error) {
	for {
		w.mu.Lock()
		room, changed := w.capacity-w.running, w.changed
		w.mu.Unlock()
		if room > 0 {
			return room, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// Cancel implements ports.Intake; the ordering tests cancel nothing.
func (w *workIntake) Cancel(string, string) bool { return false }

// waitUntil waits until cond holds (called under the intake's lock), or
// ctx ends.
func (w *workIntake) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		w.mu.Lock()
		ok, changed := cond(), w.changed
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// snapshot returns a copy of what the intake recorded, under its lock.
func (w *workIntake) snapshot() workRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := workRecord{maxRunning: w.maxRunning, overlaps: map[string]int{}, starts: map[string][]int{},
		order: append([]string(nil), w.order...), finished: map[string]bool{}}
	for k, v := range w.overlaps {
		r.overlaps[k] = v
	}
	for k, v := range w.starts {
		r.starts[k] = append([]int(nil), v...)
	}
	for k := range w.finished {
		r.finished[k] = true
	}
	return r
}

// span returns the time from the first task's start to the last one's end.
func (w *workIntake) span() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastEnd.Sub(w.firstStart)
}

// isFinished reports whether the task was settled.
func (w *workIntake) isFinished(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.finished[key]
}

// workRecord is what a workIntake recorded.
type workRecord struct {
	maxRunning int
	overlaps   map[string]int
	starts     map[string][]int
	order      []string
	finished   map[string]bool
}

// totalOverlaps sums the overlaps of every key.
func (r workRecord) totalOverlaps() int {
	n := 0
	for _, v := range r.overlaps {
		n += v
	}
	return n
}

var _ ports.Intake = (*workIntake)(nil)
