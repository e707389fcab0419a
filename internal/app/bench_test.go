package app_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// countingSink acknowledges every batch at once and only counts results,
// so that the benchmark measures the runtime rather than the sink.
type countingSink struct{ delivered atomic.Int64 }

func (s *countingSink) Deliver(_ context.Context, results []domain.Result) error {
	s.delivered.Add(int64(len(results)))
	return nil
}

// BenchmarkRuntimeThroughput measures tasks/s through the whole runtime
// path (Offer, dedupe, routing, scheduling, Invoke, outbox, settle) with a
// trivial handler. Compare with BenchmarkBaselineWorkerPool, the same
// handler behind a bare channel-fed pool of the same size.
func BenchmarkRuntimeThroughput(b *testing.B) {
	ev := &events{}
	src := newFakeSource(ev, "t")
	sink := &countingSink{}
	ctl := &fakeControl{events: ev}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize = 50, 1000
	cfg.DedupeCapacity = 10000
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
	<-src.started
	in := src.in()

	var settled sync.WaitGroup
	settle := func(error) { settled.Done() }
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		task := &domain.Task{RunID: "bench", NodeID: "n" + strconv.Itoa(i), ExecutorType: "calc"}
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
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	cancel()
	<-done
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
	b.ResetTimer()
	for i := range b.N {
		tasks <- &domain.Task{RunID: "bench", NodeID: "n" + strconv.Itoa(i), ExecutorType: "calc"}
	}
	close(tasks)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
