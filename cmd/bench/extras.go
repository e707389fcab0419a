package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
)

// footprintSection is the table's section for memory, start-up, drain and
// the engine's control-plane cost.
const footprintSection = "Footprint and lifecycle"

func init() {
	register(scenario{name: "memory/parked", smoke: true, run: runMemoryParked})
	register(scenario{name: "drain", smoke: true, run: runDrain})
}

// parkedDelay is the gateway delay of parked tasks: longer than any
// measurement, so that none finishes meanwhile.
const parkedDelay = 10 * time.Minute

// pushWorkers is how many pushes are in flight at once when the harness
// loads an executor.
const pushWorkers = 16

// runMemoryParked measures the memory a task parked in its handler costs:
// the executor's live heap and goroutine stacks with N tasks parked, minus
// the same when idle, divided by N.
func runMemoryParked(ctx context.Context, o *options) ([]Row, error) {
	counts := []int{1000, 10000}
	if o.smoke {
		counts = counts[:1]
	}
	var rows []Row
	for _, n := range counts {
		row, err := measureParked(ctx, n)
		if err != nil {
			return rows, fmt.Errorf("%d parked: %w", n, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// footprint is a process's memory at one moment, after a collection.
type footprint struct {
	heap, stack float64 // go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes
	rss         int64
	goroutines  float64
}

// measure collects the executor's garbage, then reads its memory.
func measure(svc *service) (footprint, error) {
	if err := collect(svc); err != nil {
		return footprint{}, err
	}
	var f footprint
	heap, err1 := svc.metric("go_memstats_heap_inuse_bytes")
	stack, err2 := svc.metric("go_memstats_stack_inuse_bytes")
	goroutines, err3 := svc.metric("go_goroutines")
	rss, err4 := svc.rss()
	f.heap, f.stack, f.rss, f.goroutines = heap, stack, rss, goroutines
	return f, errors.Join(err1, err2, err3, err4)
}

// measureParked measures one row of memory/parked: n tasks parked in
// payment-processor handlers of an executor-wide process of its own.
func measureParked(ctx context.Context, n int) (Row, error) {
	engine, err := startExtrasEngine()
	if err != nil {
		return Row{}, err
	}
	defer engine.close()
	svc, id, err := startWide(ctx, engine, n, parkedDelay)
	if err != nil {
		return Row{}, err
	}
	defer svc.kill() // the parked tasks would hold a graceful stop for minutes
	addr, err := engine.endpoint(ctx, id)
	if err != nil {
		return Row{}, err
	}
	// Warm up the push path and the result path with tasks that fail at
	// once, so that connections and buffers exist before the idle reading.
	const warm = 200
	warmUp := make([]*dispatcherpb.ExecutionRequest, warm)
	for i := range warm {
		warmUp[i] = paymentPush(id, fmt.Sprintf("w%05d", i), false)
	}
	if err := engine.pushAll(ctx, addr, pushWorkers, warmUp); err != nil {
		return Row{}, err
	}
	if err := engine.waitResults(ctx, warm, 30*time.Second); err != nil {
		return Row{}, err
	}
	idle, err := measure(svc)
	if err != nil {
		return Row{}, err
	}
	parked := make([]*dispatcherpb.ExecutionRequest, n)
	for i := range n {
		parked[i] = paymentPush(id, fmt.Sprintf("p%05d", i), true)
	}
	if err := engine.pushAll(ctx, addr, pushWorkers, parked); err != nil {
		return Row{}, err
	}
	if err := waitRunning(ctx, svc, "payment-processor", n); err != nil {
		return Row{}, err
	}
	full, err := measure(svc)
	if err != nil {
		return Row{}, err
	}
	kib := func(full, idle float64) float64 { return (full - idle) / float64(n) / 1024 }
	return Row{Section: footprintSection, Name: fmt.Sprintf("memory per parked task @ %d parked", n), Unit: "KiB",
		Value: kib(full.heap+full.stack, idle.heap+idle.stack), Target: Target{AtMost, 8},
		Note: fmt.Sprintf("go_memstats heap_inuse + stack_inuse after a forced GC, %d tasks parked in payment-processor minus idle, / %d: heap %.1f KiB + stacks %.1f KiB; RSS %.1f KiB; %.2f goroutines per task; executor-wide role (MaxConcurrentTasks %d)",
			n, n, kib(full.heap, idle.heap), kib(full.stack, idle.stack), kib(float64(full.rss), float64(idle.rss)),
			(full.goroutines-idle.goroutines)/float64(n), n)}, nil
}

// waitRunning waits until the executor reports n handlers of executorType
// running (gamelan_executor_tasks_running).
func waitRunning(ctx context.Context, svc *service, executorType string, n int) error {
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		running, err := svc.metric(`gamelan_executor_tasks_running{executor_type="` + executorType + `"}`)
		if err == nil && int(running) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v handlers of %s running after 60 s, want %d (%v)", running, executorType, n, err)
		}
		select {
		case <-tick.C:
		case <-svc.exited:
			return fmt.Errorf("executor exited: %v", svc.err)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// drainTasks and drainDelay shape the drain scenario: every task parked in
// a handler that returns after drainDelay.
const (
	drainTasks = 1000
	drainDelay = 2 * time.Second
)

// runDrain measures a graceful stop under load: drainTasks tasks parked in
// their handlers, SIGTERM, and the time until every result has reached the
// engine and the process has exited. Every task must be answered, once,
// COMPLETED.
func runDrain(ctx context.Context, _ *options) ([]Row, error) {
	engine, err := startExtrasEngine()
	if err != nil {
		return nil, err
	}
	defer engine.close()
	svc, id, err := startWide(ctx, engine, drainTasks, drainDelay)
	if err != nil {
		return nil, err
	}
	addr, err := engine.endpoint(ctx, id)
	if err != nil {
		svc.kill()
		return nil, err
	}
	tasks := make([]*dispatcherpb.ExecutionRequest, drainTasks)
	for i := range drainTasks {
		tasks[i] = paymentPush(id, fmt.Sprintf("d%05d", i), true)
	}
	if err := engine.pushAll(ctx, addr, pushWorkers, tasks); err != nil {
		svc.kill()
		return nil, err
	}
	// The last handler started before this, so it ends before lastDue.
	lastDue := time.Now().Add(drainDelay)
	if err := waitRunning(ctx, svc, "payment-processor", drainTasks); err != nil {
		svc.kill()
		return nil, err
	}
	if early, _, _, _ := engine.tally(statusCompleted); early > 0 {
		svc.kill()
		return nil, fmt.Errorf("%d tasks finished before all %d were in flight: lengthen drainDelay", early, drainTasks)
	}
	sigterm := time.Now()
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		svc.kill()
		return nil, err
	}
	select {
	case <-svc.exited:
	case <-time.After(90 * time.Second):
		svc.kill()
		return nil, errors.New("the executor did not exit within 90 s of SIGTERM")
	}
	exited := time.Now()
	distinct, dups, other, last := engine.tally(statusCompleted)
	if distinct != drainTasks || other != 0 || svc.err != nil {
		return nil, fmt.Errorf("drain lost tasks: %d of %d answered, %d not COMPLETED, exit: %v", distinct, drainTasks, other, svc.err)
	}
	note := fmt.Sprintf("%d tasks in payment-processor handlers of %s; the last handler was due %s after SIGTERM; SIGTERM -> last result %s, -> exit %s; lost 0, duplicates %d",
		drainTasks, drainDelay, lastDue.Sub(sigterm).Round(time.Millisecond), last.Sub(sigterm).Round(time.Millisecond),
		exited.Sub(sigterm).Round(time.Millisecond), dups)
	return []Row{{Section: footprintSection, Name: fmt.Sprintf("drain %d in flight (SIGTERM to all results and exit)", drainTasks), Unit: "ms",
		Value: float64(maxTime(last, exited).Sub(sigterm)) / float64(time.Millisecond), Note: note}}, nil
}

// maxTime returns the later of a and b.
func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
