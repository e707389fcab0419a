package handlers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamelan-go/executor/pkg/executor"
)

// The executor types these scenarios host, written against pkg/executor as
// a fork writes its own. Each records what its handlers did (tally), so that
// a test can tell a handler still running from one that returned.

// tally counts a type's handler calls: how many entered, how many returned,
// and when each task's handler started.
type tally struct {
	entered  atomic.Int64
	returned atomic.Int64
	// peak is the most handlers seen running at once since it was reset.
	peak atomic.Int64

	mu      sync.Mutex
	started map[string]time.Time // node id -> when its handler started
}

func newTally() *tally { return &tally{started: make(map[string]time.Time)} }

func (c *tally) enter(task *executor.Task) {
	c.mu.Lock()
	c.started[task.NodeID] = time.Now()
	c.mu.Unlock()
	// Read after the entry, the returns can only make this an underestimate.
	now := c.entered.Add(1) - c.returned.Load()
	for {
		seen := c.peak.Load()
		if now <= seen || c.peak.CompareAndSwap(seen, now) {
			return
		}
	}
}

func (c *tally) leave() { c.returned.Add(1) }

// running is how many handlers entered and have not returned.
func (c *tally) running() int64 { return c.entered.Load() - c.returned.Load() }

// startedAt returns when the handler of node started.
func (c *tally) startedAt(node string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.started[node]
	return at, ok
}

// descriptor declares a gRPC type of the given concurrency that serves its
// own node type, so that routing never depends on a hint.
func descriptor(typ string, maxConcurrent int) executor.Descriptor {
	return executor.Descriptor{
		Type: typ, CommunicationType: executor.GRPC, MaxConcurrentTasks: maxConcurrent,
		SupportedNodeTypes: []string{typ}, Version: "1.0.0",
	}
}

// steadyHandler is the well-behaved type: every task takes work, honours
// its context, and completes. Hosted beside a misbehaving type, it shows
// whether other types keep flowing; alone, it is the fixed-duration handler
// whose capacity is THREAD_POOL_SIZE / work.
type steadyHandler struct {
	typ  string
	max  int
	work time.Duration
	*tally
}

func (h steadyHandler) Descriptor() executor.Descriptor { return descriptor(h.typ, h.max) }

func (h steadyHandler) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
	h.enter(task)
	defer h.leave()
	timer := time.NewTimer(h.work)
	defer timer.Stop()
	select {
	case <-timer.C:
		return executor.Success(map[string]any{"node": task.NodeID}), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// slowHandler honours its context but takes longer than the task's
// timeout: it works for context "workMs" milliseconds (a minute when
// absent), and returns ctx's error when the deadline comes first.
type slowHandler struct {
	typ string
	max int
	*tally
}

func (h slowHandler) Descriptor() executor.Descriptor { return descriptor(h.typ, h.max) }

func (h slowHandler) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
	h.enter(task)
	defer h.leave()
	work := time.Minute
	if ms, err := executor.Number(task.Context, "workMs"); err == nil {
		work = time.Duration(ms) * time.Millisecond
	}
	timer := time.NewTimer(work)
	defer timer.Stop()
	select {
	case <-timer.C:
		return executor.Success(map[string]any{"node": task.NodeID}), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// hugePanicBytes is the size of the panic value of a "huge" panic: far
// above every bound (4 KiB in a result, 1 KiB in a log line).
const hugePanicBytes = 64 << 10

// panicMarker starts every panic value, so that a test can find it.
const panicMarker = "handler-exploded"

// panickyHandler panics as context "panic" says: "huge" with a 64 KiB
// string, "error" with an error value, "runtime" with a runtime error (a
// nil map written to); "none" completes.
type panickyHandler struct {
	typ string
	max int
	*tally
}

func (h panickyHandler) Descriptor() executor.Descriptor { return descriptor(h.typ, h.max) }

func (h panickyHandler) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	h.enter(task)
	defer h.leave()
	switch task.Context["panic"] {
	case "huge":
		panic(panicMarker + strings.Repeat("!", hugePanicBytes))
	case "error":
		panic(errors.New(panicMarker + ": an error value"))
	case "runtime":
		var m map[string]int
		m[panicMarker]++ // assignment to a nil map: a runtime.Error
	}
	return executor.Success(map[string]any{"node": task.NodeID}), nil
}

// deafHandler ignores its context: it blocks until gate is closed, however
// long past its deadline that is, then completes.
type deafHandler struct {
	typ  string
	max  int
	gate <-chan struct{}
	*tally
}

func (h deafHandler) Descriptor() executor.Descriptor { return descriptor(h.typ, h.max) }

func (h deafHandler) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	h.enter(task)
	defer h.leave()
	<-h.gate
	return executor.Success(map[string]any{"node": task.NodeID}), nil
}

// hungHandler never returns while the service runs: it ignores its context
// and waits on a channel closed only once the test's service has stopped,
// so that its goroutine does not outlive the test.
type hungHandler struct {
	typ      string
	max      int
	released <-chan struct{}
	*tally
}

func (h hungHandler) Descriptor() executor.Descriptor { return descriptor(h.typ, h.max) }

func (h hungHandler) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	h.enter(task)
	defer h.leave()
	<-h.released
	return nil, errors.New("released after the service stopped")
}
