package app_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// The benchmarks below compare the runtime with the least any runtime of
// this kind needs, measured in the same run: BenchmarkRuntimeThroughput with
// BenchmarkBaselineWorkerPool (tasks per second under a full load), and
// BenchmarkRuntimeLatencyIdle with BenchmarkBaselineLatencyIdle (the time
// one task takes on an otherwise idle service). Every one builds its tasks
// the same way (benchTask), so that allocations per task compare directly.

// countingSink acknowledges every batch at once and only counts results,
// so that the benchmark measures the runtime rather than the sink. When
// arrived is set, it also sends one signal per result on it.
type countingSink struct {
	delivered atomic.Int64
	arrived   chan struct{}
}

func (s *countingSink) Deliver(_ context.Context, results []domain.Result) error {
	s.delivered.Add(int64(len(results)))
	for _, res := range results {
		if res.Status != domain.StatusCompleted {
			// A benchmark of answers decided at intake would measure
			// nothing of the handler's path.
			panic("benchmark task not completed: " + string(res.Status) + " " + res.Error.Code + " " + res.Error.Message)
		}
		if s.arrived != nil {
			s.arrived <- struct{}{}
		}
	}
	return nil
}

// benchMeter reports a benchmark's tasks/s and, where it can be measured,
// the process's CPU time per task (cpu-ns/task), which the other work of a
// shared machine disturbs far less than time. Start it after the set-up,
// just before the timer is reset.
type benchMeter struct {
	cpu0 time.Duration
	ok   bool
}

func startMeter() benchMeter {
	cpu, ok := processCPU()
	return benchMeter{cpu0: cpu, ok: ok}
}

// report stops the timer and reports the figures for b.N tasks.
func (m benchMeter) report(b *testing.B) {
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	if cpu, ok := processCPU(); ok && m.ok {
		b.ReportMetric(float64(cpu-m.cpu0)/float64(b.N), "cpu-ns/task")
	}
}

// benchTask is the i-th task of a benchmark: a valid task with a key of its
// own, so that deduplication never shortcuts it.
func benchTask(i int) *domain.Task {
	return &domain.Task{RunID: "bench", NodeID: "n" + strconv.Itoa(i), Attempt: 1, ExecutorType: "calc"}
}

// benchRuntime starts a runtime of 50 workers serving a trivial handler
// through one transport whose sink is sink, and returns its intake. The
// runtime stops when the benchmark ends.
func benchRuntime(b *testing.B, sink ports.ResultSink) ports.Intake {
	return benchRuntimeTraced(b, sink, nil)
}

// benchRuntimeTraced is benchRuntime with tracer as Config.Tracer (nil:
// tracing off).
func benchRuntimeTraced(b *testing.B, sink ports.ResultSink, tracer trace.Tracer) ports.Intake {
	b.Helper()
	ev := &events{}
	src := newFakeSource(ev, "t")
	ctl := &fakeControl{events: ev}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 50, 1000
	cfg.DedupeCapacity = 10000
	cfg.Tracer = tracer
	rt, err := app.New(cfg, []app.Hosted{{
		Executor:     completing("calc", 50),
		Registration: domain.Registration{ExecutorID: "bench-calc"},
		Transport:    "t",
	}}, []app.Transport{{Name: "t", Source: src, Sink: sink}}, ctl, ctl, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	<-src.started
	return src.in()
}

// BenchmarkRuntimeThroughput measures tasks/s through the whole runtime
// path (Offer, dedupe, routing, scheduling, Invoke, outbox, settle) with a
// trivial handler. Compare with BenchmarkBaselineWorkerPool, the same
// handler behind a bare channel-fed pool of the same size.
func BenchmarkRuntimeThroughput(b *testing.B) {
	benchThroughput(b, benchRuntime(b, &countingSink{}), benchTask)
}

// BenchmarkRuntimeThroughputTraced is BenchmarkRuntimeThroughput with
// tracing on: every span sampled, batched and handed to an exporter that
// discards it, and every task bringing the engine's traceparent. It is the
// cost of tracing on, without the network.
func BenchmarkRuntimeThroughputTraced(b *testing.B) {
	benchThroughput(b, benchRuntimeTraced(b, &countingSink{}, benchTracer(b)), benchTracedTask)
}

// benchTracer returns a tracer that samples every span and exports it, in
// batches, to an exporter that discards it.
func benchTracer(b *testing.B) trace.Tracer {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer("bench")
}

// benchTracedTask is benchTask with the engine's trace context.
func benchTracedTask(i int) *domain.Task {
	t := benchTask(i)
	t.Trace = &domain.TraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	return t
}

// benchThroughput offers b.N tasks made by newTask to in as fast as it
// takes them, and waits until all are settled.
func benchThroughput(b *testing.B, in ports.Intake, newTask func(int) *domain.Task) {
	ctx := context.Background()

	var settled sync.WaitGroup
	settle := func(error) { settled.Done() }
	b.ReportAllocs()
	meter := startMeter()
	b.ResetTimer()
	for i := range b.N {
		task := newTask(i)
		settled.Add(1)
		for {
			if _, err := in.AwaitCapacity(ctx); err != nil {
				b.Fatal(err)
			}
			err := in.Offer(ctx, ports.Delivery{Task: task, Settle: settle})
			if err == nil {
				break
			}
			// Tasks admitted earlier may fill the outbox between AwaitCapacity
			// and Offer; a pulling source then waits for room again.
			if !errors.Is(err, domain.ErrOverloaded) {
				b.Fatal(err)
			}
		}
	}
	settled.Wait()
	meter.report(b)
}

// BenchmarkBaselineWorkerPool runs the same handler through 50 goroutines
// fed by a channel of 1000: the floor any runtime with these features sits on.
func BenchmarkBaselineWorkerPool(b *testing.B) {
	ex := completing("calc", 50)
	tasks := make(chan *domain.Task, 1000)
	var wg sync.WaitGroup
	var completed atomic.Int64
	for range 50 {
		wg.Go(func() {
			for task := range tasks {
				res, _ := ex.Execute(context.Background(), task)
				res.CompletedAt = time.Now()
				completed.Add(1)
			}
		})
	}
	b.ReportAllocs()
	meter := startMeter()
	b.ResetTimer()
	for i := range b.N {
		tasks <- benchTask(i)
	}
	close(tasks)
	wg.Wait()
	meter.report(b)
}

// BenchmarkRuntimeLatencyIdle measures one task's way through an idle
// runtime: offer it, wait until its result reaches the sink, and only then
// offer the next. ns/op is the latency the runtime adds to a handler at
// ordinary load. Compare with BenchmarkBaselineLatencyIdle.
func BenchmarkRuntimeLatencyIdle(b *testing.B) {
	sink := &countingSink{arrived: make(chan struct{}, 1)}
	benchLatency(b, benchRuntime(b, sink), sink, benchTask)
}

// BenchmarkRuntimeLatencyIdleTraced is BenchmarkRuntimeLatencyIdle with
// tracing on, as BenchmarkRuntimeThroughputTraced.
func BenchmarkRuntimeLatencyIdleTraced(b *testing.B) {
	sink := &countingSink{arrived: make(chan struct{}, 1)}
	benchLatency(b, benchRuntimeTraced(b, sink, benchTracer(b)), sink, benchTracedTask)
}

// benchLatency offers b.N tasks made by newTask to in one at a time, each
// once the last one's result reached sink.
func benchLatency(b *testing.B, in ports.Intake, sink *countingSink, newTask func(int) *domain.Task) {
	ctx := context.Background()
	b.ReportAllocs()
	meter := startMeter()
	b.ResetTimer()
	for i := range b.N {
		if err := in.Offer(ctx, ports.Delivery{Task: newTask(i)}); err != nil {
			b.Fatal(err)
		}
		<-sink.arrived
	}
	meter.report(b)
}

// BenchmarkBaselineLatencyIdle calls the same handler through one channel
// hand-off to a worker goroutine and one back: the least a service that
// runs handlers on workers of their own adds to one task.
func BenchmarkBaselineLatencyIdle(b *testing.B) {
	ex := completing("calc", 50)
	tasks := make(chan *domain.Task)
	results := make(chan *domain.Result)
	go func() {
		for task := range tasks {
			res, _ := ex.Execute(context.Background(), task)
			res.CompletedAt = time.Now()
			results <- res
		}
	}()
	defer close(tasks)
	b.ReportAllocs()
	meter := startMeter()
	b.ResetTimer()
	for i := range b.N {
		tasks <- benchTask(i)
		if res := <-results; res.Status != domain.StatusCompleted {
			b.Fatal(res.Status)
		}
	}
	meter.report(b)
}
