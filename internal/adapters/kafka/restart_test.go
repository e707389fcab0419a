package kafka_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// TestBrokerRestartUnderLoad: a TaskSource feeding a worker that answers
// each task through a ResultSink and settles it once the result is
// acknowledged, as the runtime does. 300 tasks are being produced when the
// broker goes down with tasks in flight, stays down until the adapters
// notice, and comes back (same ports, same data); 200 more follow: every task gets a result, and a result repeats only for a task
// that was offered again (a redelivery) or whose delivery was retried.
func TestBrokerRestartUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := kafkatest.Start(t, kafkatest.WithPersistence())
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	results := b.Results(t)
	source := newSource(t, cfg, newLogBook(t))
	in := startSource(t, source, 32)
	w := startWorker(t, in, kafka.NewResultSink(newProducer(t, cfg), cfg))

	const before, after = 300, 200
	var (
		producing sync.WaitGroup
		produced  = make(chan error, 1)
	)
	producing.Go(func() {
		for i := range before {
			if err := b.ProduceTask(ctx, task(fmt.Sprintf("load-%03d", i))); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	})
	// Restart while the first tasks are still being produced and worked on,
	// and keep the broker down until the adapters have noticed: the source
	// lost its group session, and the sink failed a delivery (unless it had
	// nothing to deliver). A shorter outage is absorbed by the clients'
	// own retries and proves less.
	require.NoError(t, results.WaitForUnique(ctx, before/10), "results before the restart")
	inFlight := len(in.Outstanding())
	var noticed bool
	b.RestartAfter(t, func() {
		noticed = pollUntil(waitTimeout, func() bool {
			return source.Healthy() != nil && (w.retriedCount() > 0 || len(in.Outstanding()) == 0)
		})
	})
	require.True(t, noticed, "the adapters never noticed the broker was down (source health: %v, failed deliveries: %d)",
		source.Healthy(), w.retriedCount())
	producing.Wait()
	require.NoError(t, <-produced, "produce across the restart")
	for i := before; i < before+after; i++ {
		require.NoError(t, b.ProduceTask(ctx, task(fmt.Sprintf("load-%03d", i))), "produce after the restart")
	}
	require.NoError(t, results.WaitForUnique(ctx, before+after), "every task answered")
	waitLag(t, b, group, 0)

	unique := results.UniqueResults()
	require.Len(t, unique, before+after)
	for i := range before + after {
		key := domain.IdempotencyKey(fmt.Sprintf("load-%03d", i), "calculate", 1)
		require.Contains(t, unique, key)
	}
	counts := make(map[string]int)
	for _, m := range results.All() {
		counts[m.RunID]++
	}
	for run, n := range counts {
		if n > 1 {
			assert.True(t, timesOffered(in, run) > 1 || w.retried(run),
				"run %s answered %d times, offered %d times, delivery never retried", run, n, timesOffered(in, run))
		}
	}
	t.Logf("restarted with %d tasks in flight; %d results for %d tasks: %d duplicates; %d offers; deliveries retried for %d tasks",
		inFlight, len(results.All()), before+after, results.Duplicates(), len(in.Offers()), w.retriedCount())
}

// pollUntil reports whether cond held within timeout, polling it. It does
// not fail the test, for callers that must not (a RestartAfter callback).
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-ticker.C
	}
	return true
}

// TestProducerConnectsLazily: a Producer is created without a broker, its
// sends fail (within their context) while none listens, and succeed once
// a broker listens at the address.
func TestProducerConnectsLazily(t *testing.T) {
	t.Parallel()
	listener, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	port := listener.Addr().(*net.TCPAddr).Port
	require.NoError(t, listener.Close())

	cfg := kafka.Config{Brokers: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}}
	producer, err := kafka.NewProducer(cfg)
	require.NoError(t, err, "NewProducer with no broker listening")
	t.Cleanup(func() { _ = producer.Close() })
	sink := kafka.NewResultSink(producer, cfg)
	result := domain.Result{RunID: "lazy", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}

	const deadline = 2 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	start := time.Now()
	err = sink.Deliver(ctx, []domain.Result{result})
	elapsed := time.Since(start)
	cancel()
	require.Error(t, err, "Deliver with no broker")
	t.Logf("Deliver with no broker failed after %s: %v", elapsed, err)
	// Connecting does not watch the context (sarama's client gives up
	// after its own metadata retries, about 0.75 s against a refused
	// port), so only a deadline longer than that is kept.
	assert.Less(t, elapsed, deadline, "Deliver overran its context")

	// kafkatest picks free ports; this test needs the one the producer
	// was given.
	b := kafkatest.Start(t, kafkatest.WithClusterOptions(kfake.Ports(port)))
	require.Equal(t, cfg.Brokers, b.Addrs())
	results := b.Results(t)
	require.NoError(t, sink.Deliver(waitContext(t), []domain.Result{result}), "Deliver once a broker listens")
	require.NoError(t, results.WaitForMessages(waitContext(t), 1))
}

// worker answers every task offered to an Intake, as the runtime does: it
// delivers a COMPLETED result for each through a ResultSink, retrying
// until the sink acknowledges, then settles the task with nil.
type worker struct {
	in   *porttest.Intake
	sink *kafka.ResultSink

	mu      sync.Mutex
	retries map[string]bool // run ids whose delivery failed at least once
}

// startWorker starts a worker on in; it stops before the source does.
func startWorker(t *testing.T, in *porttest.Intake, sink *kafka.ResultSink) *worker {
	t.Helper()
	w := &worker{in: in, sink: sink, retries: make(map[string]bool)}
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	running.Go(func() { w.run(ctx) })
	t.Cleanup(func() {
		cancel()
		running.Wait()
	})
	return w
}

// retryPace paces a worker's deliveries while the broker is away.
var retryPace = domain.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}

func (w *worker) run(ctx context.Context) {
	for {
		if w.in.WaitUntil(ctx, func() bool { return len(w.in.Outstanding()) > 0 }) != nil {
			return
		}
		batch := w.in.Outstanding()
		results := make([]domain.Result, len(batch))
		for i, o := range batch {
			results[i] = domain.ResultFor(&o.Task, domain.StatusCompleted)
			results[i].ExecutorID = taxExecutorID
			results[i].Output = map[string]any{"answered": o.Task.RunID}
		}
		for retry := 0; !w.deliver(ctx, results); retry++ {
			if retryPace.Wait(ctx, retry) != nil {
				return
			}
		}
		for _, o := range batch {
			o.Settle(nil)
		}
	}
}

// deliver delivers results once, and notes a failure against their runs.
func (w *worker) deliver(ctx context.Context, results []domain.Result) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if w.sink.Deliver(ctx, results) == nil {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range results {
		w.retries[r.RunID] = true
	}
	return false
}

func (w *worker) retriedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.retries)
}

func (w *worker) retried(runID string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.retries[runID]
}
