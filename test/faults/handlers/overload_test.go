package handlers

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// Part 2 of issue 14: overload at twice capacity. The service hosts one
// type whose handler takes a fixed 40 ms, with THREAD_POOL_SIZE 4 and
// MaxConcurrentTasks 4, so it completes at most 4 / 40 ms = 100 tasks/s;
// the test's engine offers 200 a second for the window (5 s, 30 s in the
// long variant), and checks that the service applies backpressure instead
// of taking more than it can hold, that its memory plateaus, that it does
// not crash, and that every task it admitted is answered.

const (
	fixedType       = "fixed"
	fixedWork       = 40 * time.Millisecond
	overloadWorkers = 4
	overloadQueue   = 4
	// admitLimit is what the service admits at once: THREAD_POOL_SIZE +
	// QUEUE_SIZE.
	admitLimit = overloadWorkers + overloadQueue
	// overloadFactor is how many times its capacity the service is offered.
	overloadFactor = 2
	// retryAfter is how long the push engine waits before offering a
	// refused task again.
	retryAfter = 50 * time.Millisecond
	// heapGrowth and heapSlack bound the memory of the window's last third
	// against its first: peak(last) <= heapGrowth * peak(first) + heapSlack.
	heapGrowth = 1.5
	heapSlack  = 4 << 20
	// goroutineSlack bounds the goroutines of the window's last third
	// against its first: gRPC's connection and stream goroutines come and
	// go, a leak per task would add hundreds.
	goroutineSlack = 30
)

// capacity is what the fixed type completes per second at most.
func capacity() float64 { return overloadWorkers / fixedWork.Seconds() }

// overloadWindow is how long tasks are offered.
func overloadWindow() time.Duration { return testkit.Pick(5*time.Second, 30*time.Second) }

// overloadEnv is the environment of the overload services. Finished tasks
// are remembered for deduplication up to DEDUPE_CAPACITY; it is set below
// what one window completes so that the window shows that bound reached
// and holding, not a table still filling up.
func overloadEnv(engineAddr, intake string) map[string]string {
	vars := serviceEnv(engineAddr, intake, overloadWorkers, overloadQueue)
	vars["GAMELAN_EXECUTOR_DEDUPE_CAPACITY"] = "200"
	return vars
}

// startFixed starts a service hosting the fixed type through intake, with
// the engine's tap installed, and waits until it serves.
func startFixed(t *testing.T, intake string) (*runningService, *engineTap) {
	t.Helper()
	tap := &engineTap{}
	engine := grpctest.NewEngine(grpctest.WithServerOptions(grpc.ChainStreamInterceptor(tap.intercept)))
	addr := engine.Start(t)
	fixed := steadyHandler{typ: fixedType, max: overloadWorkers, work: fixedWork, tally: newTally()}
	svc := startService(t, engine, overloadEnv(addr, intake), fixed)
	svc.waitServing(t, intake != "push", fixedType)
	return svc, tap
}

// engineTap counts, on the engine's side, the tasks it sent on task
// streams and the results it received through ReportResults, so that the
// tasks in flight (sent, not yet answered) can be sampled cheaply.
type engineTap struct {
	sent, answered atomic.Int64
}

func (tap *engineTap) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &tappedStream{ServerStream: ss, tap: tap})
}

// inFlight is how many tasks the engine sent and has no result for.
func (tap *engineTap) inFlight() int64 { return tap.sent.Load() - tap.answered.Load() }

type tappedStream struct {
	grpc.ServerStream
	tap *engineTap
}

func (s *tappedStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if _, ok := m.(*gamelanv1.ExecutionTask); ok && err == nil {
		s.tap.sent.Add(1)
	}
	return err
}

func (s *tappedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if _, ok := m.(*gamelanv1.TaskResult); ok && err == nil {
		s.tap.answered.Add(1)
	}
	return err
}

// sample is one reading of the process and of the service during a window.
type sample struct {
	at         time.Duration // since the window began
	heap       uint64        // bytes of heap objects, live or not yet swept
	goroutines int
	admitted   float64 // the service's tasks_admitted gauge
	running    float64 // its tasks_running gauge for the fixed type
	inFlight   int64   // the engine's tasks sent and not yet answered
}

// sampler reads samples every 100 ms until stopped: the heap and the
// goroutines, cheap to read, in one goroutine, and the service's gauges,
// a scrape of /q/metrics that a busy machine may slow down, in another, so
// that the memory samples keep their pace.
type sampler struct {
	stop chan struct{}
	done sync.WaitGroup

	mu     sync.Mutex
	memory []sample // heap and goroutines
	loads  []sample // admitted, running, in flight
}

func startSampler(svc *runningService, tap *engineTap) *sampler {
	s := &sampler{stop: make(chan struct{})}
	began := time.Now()
	every := func(read func(at time.Duration)) {
		ticker := time.NewTicker(100 * time.Millisecond)
		defer ticker.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-ticker.C:
				read(time.Since(began))
			}
		}
	}
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	s.done.Go(func() {
		every(func(at time.Duration) {
			metrics.Read(heap)
			one := sample{at: at, heap: heap[0].Value.Uint64(), goroutines: runtime.NumGoroutine()}
			s.mu.Lock()
			s.memory = append(s.memory, one)
			s.mu.Unlock()
		})
	})
	s.done.Go(func() {
		every(func(at time.Duration) {
			one := sample{at: at, inFlight: tap.inFlight()}
			if gauges, err := svc.scrape(); err == nil {
				one.admitted, one.running = gauges[admittedSeries], gauges[runningSeries(fixedType)]
			}
			s.mu.Lock()
			s.loads = append(s.loads, one)
			s.mu.Unlock()
		})
	})
	return s
}

// finish stops the sampler and returns its memory and load samples.
func (s *sampler) finish() (memory, loads []sample) {
	close(s.stop)
	s.done.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.memory), slices.Clone(s.loads)
}

// third is the highest heap and goroutine count of a third of the window,
// and how many samples it holds.
type third struct {
	heap       uint64
	goroutines int
	samples    int
}

// thirds returns the peaks of the first and last thirds of the samples.
// The samples are split by their order, not by their time: on a busy
// machine the sampler may miss its ticks for a while, and splitting by
// order keeps both thirds populated.
func thirds(samples []sample) (first, last third) {
	n := len(samples) / 3
	for i, s := range samples {
		var t *third
		switch {
		case i < n:
			t = &first
		case i >= len(samples)-n:
			t = &last
		default:
			continue
		}
		t.heap, t.goroutines, t.samples = max(t.heap, s.heap), max(t.goroutines, s.goroutines), t.samples+1
	}
	return first, last
}

// checkSamples asserts that memory plateaued over the window and that the
// service never held more than its bounds, and notes the figures.
func checkSamples(t *testing.T, o *testkit.Outcome, memory, loads []sample) {
	t.Helper()
	// Sampled every 100 ms, a busy machine permitting; two per third are
	// the least that shows a trend.
	require.GreaterOrEqual(t, len(memory), 6, "too few memory samples to judge the window")
	first, last := thirds(memory)
	o.Notes["memorySampledFromMs"] = []int64{memory[0].at.Milliseconds(), memory[len(memory)-1].at.Milliseconds()}
	mib := func(b uint64) float64 { return round2(float64(b) / (1 << 20)) }
	o.Notes["heapPeakFirstThirdMiB"] = mib(first.heap)
	o.Notes["heapPeakLastThirdMiB"] = mib(last.heap)
	o.Notes["goroutinesPeakFirstThird"] = first.goroutines
	o.Notes["goroutinesPeakLastThird"] = last.goroutines
	o.Notes["memorySamples"], o.Notes["loadSamples"] = len(memory), len(loads)
	assert.LessOrEqual(t, float64(last.heap), heapGrowth*float64(first.heap)+heapSlack,
		"heap grew over the window: peak %.1f MiB in the last third against %.1f MiB in the first", mib(last.heap), mib(first.heap))
	assert.LessOrEqual(t, last.goroutines, first.goroutines+goroutineSlack,
		"goroutines grew over the window: %d at the peak of the last third against %d in the first", last.goroutines, first.goroutines)

	require.NotEmpty(t, loads, "the service's gauges were never read")
	var maxAdmitted, maxRunning float64
	for _, s := range loads {
		maxAdmitted, maxRunning = max(maxAdmitted, s.admitted), max(maxRunning, s.running)
	}
	o.Notes["maxAdmitted"] = maxAdmitted
	o.Notes["maxRunning"] = maxRunning
	assert.LessOrEqual(t, maxAdmitted, float64(admitLimit), "more tasks admitted than THREAD_POOL_SIZE + QUEUE_SIZE")
	assert.LessOrEqual(t, maxRunning, float64(overloadWorkers), "more handlers running than the type's MaxConcurrentTasks")
	assert.GreaterOrEqual(t, maxAdmitted, float64(overloadWorkers), "the workers were never all busy: no overload was applied")
}

// completedIn counts the results the engine holds.
func completedIn(engine *grpctest.Engine) int { return len(engine.UniqueResults()) }

// requireAllCompleted asserts that each key has one COMPLETED result.
func requireAllCompleted(t *testing.T, engine *grpctest.Engine, keys []string) {
	t.Helper()
	unique := engine.UniqueResults()
	wrong := 0
	for _, k := range keys {
		res := unique[k]
		if res.GetStatus() != gamelanv1.TaskStatus_TASK_STATUS_COMPLETED {
			wrong++
			if wrong <= 5 {
				t.Errorf("%s: not COMPLETED: %v %v", k, res.GetStatus(), res.GetError())
			}
		}
	}
	require.Zero(t, wrong, "results that are not COMPLETED")
}

// pushEngine offers tasks to the push intake at a fixed rate of attempts,
// as an engine dispatching to a busy executor does: each attempt pushes the
// oldest refused task due for another try, else a new task. A task refused
// with 503 is offered again retryAfter later; a task still refused when the
// window closes is counted as refused and never admitted.
type pushEngine struct {
	engine   *grpctest.Engine
	endpoint string
	outcome  *testkit.Outcome

	mu       sync.Mutex
	retries  []pendingPush // refused, in order of their next try
	next     int           // index of the next new task
	admitted []string

	attempts, refusals atomic.Int64
	failures           chan error
}

type pendingPush struct {
	req *dispatcherpb.ExecutionRequest
	due time.Time
}

const pushRun = "run-push-overload"

// take returns the request of the next attempt.
func (p *pushEngine) take() *dispatcherpb.ExecutionRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.retries) > 0 && !p.retries[0].due.After(time.Now()) {
		req := p.retries[0].req
		p.retries = p.retries[1:]
		return req
	}
	node := fmt.Sprintf("n%06d", p.next)
	p.next++
	return &dispatcherpb.ExecutionRequest{
		RunId: pushRun, NodeId: node, Attempt: 1, Token: "token-" + node,
		Variables: map[string]string{"n": strconv.Itoa(p.next)}, IdempotencyKey: key(pushRun, node),
		Signature: grpctest.Signature(pushRun, executorID(fixedType)),
	}
}

// attempt pushes one task and deals with the acknowledgement.
func (p *pushEngine) attempt(ctx context.Context) {
	req := p.take()
	p.attempts.Add(1)
	ack, err := p.engine.Push(ctx, p.endpoint, req)
	switch {
	case err != nil:
		p.fail(fmt.Errorf("push %s: %w", req.GetNodeId(), err))
	case ack.GetAccepted():
		k := key(req.GetRunId(), req.GetNodeId())
		p.outcome.Submitted(k)
		p.mu.Lock()
		p.admitted = append(p.admitted, k)
		p.mu.Unlock()
	case ack.GetCode() == 503:
		p.refusals.Add(1)
		p.mu.Lock()
		p.retries = append(p.retries, pendingPush{req: req, due: time.Now().Add(retryAfter)})
		p.mu.Unlock()
	default:
		p.fail(fmt.Errorf("push %s refused with %d %s, not 503", req.GetNodeId(), ack.GetCode(), ack.GetMessage()))
	}
}

func (p *pushEngine) fail(err error) {
	select {
	case p.failures <- err:
	default: // the first few say enough
	}
}

// run makes attempts at perSecond from pushers goroutines until the window
// ends.
func (p *pushEngine) run(ctx context.Context, perSecond float64, window time.Duration, pushers int) {
	tokens := make(chan struct{}, pushers)
	var wg sync.WaitGroup
	for range pushers {
		wg.Go(func() {
			for range tokens {
				p.attempt(ctx)
			}
		})
	}
	pace(window, perSecond, func() { tokens <- struct{}{} })
	close(tokens)
	wg.Wait()
}

// pace calls offer perSecond times a second on average until window has
// passed. It keeps the average even when its goroutine is not scheduled
// for a while (the machine may be busy): it then makes up for the calls
// due meanwhile.
func pace(window time.Duration, perSecond float64, offer func()) {
	began := time.Now()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for made := 0; ; {
		elapsed := time.Since(began)
		if elapsed >= window {
			return
		}
		for due := int(elapsed.Seconds() * perSecond); made < due; made++ {
			offer()
		}
		<-ticker.C
	}
}

// TestOverloadOnPushIsRefusedAndRetried offers twice the service's capacity
// on the gRPC push intake. The service admits at most THREAD_POOL_SIZE +
// QUEUE_SIZE tasks at once and refuses the rest with 503 (accepted false),
// which the test's engine offers again 50 ms later; every task it accepted
// is answered COMPLETED exactly once, memory plateaus, and the service
// neither crashes nor stops being live.
func TestOverloadOnPushIsRefusedAndRetried(t *testing.T) {
	svc, tap := startFixed(t, "push")
	reg, ok := svc.engine.Registration(executorID(fixedType))
	require.True(t, ok)
	o := &testkit.Outcome{Scenario: "overload at twice capacity, push", Notes: map[string]any{}}
	window := overloadWindow()
	offered := overloadFactor * capacity()
	load := &pushEngine{engine: svc.engine, endpoint: reg.GetEndpoint(), outcome: o, failures: make(chan error, 8)}

	ctx, cancel := context.WithTimeout(context.Background(), window+waitLimit)
	defer cancel()
	samples := startSampler(svc, tap)
	began := time.Now()
	load.run(ctx, offered, window, 16)
	elapsed := time.Since(began)
	completedInWindow := completedIn(svc.engine)
	memory, loads := samples.finish()
	checkSamples(t, o, memory, loads)
	close(load.failures)
	for err := range load.failures {
		t.Error(err)
	}

	load.mu.Lock()
	admitted, neverAdmitted := slices.Clone(load.admitted), len(load.retries)
	load.mu.Unlock()
	require.NoError(t, svc.engine.WaitForResults(ctx, len(admitted)), "admitted tasks not answered")
	requireAllCompleted(t, svc.engine, admitted)
	assert.Equal(t, http.StatusOK, svc.status("/q/health/live"))
	assert.False(t, svc.exited(), "the service stopped under overload")
	assert.Positive(t, load.refusals.Load(), "no push was refused: no backpressure")
	assert.GreaterOrEqual(t, float64(load.attempts.Load()), 1.5*float64(completedInWindow),
		"the engine offered less than 1.5 times what the service completed: not an overload")

	o.Notes["capacityPerSec"] = capacity()
	o.Notes["offeredPerSec"] = offered
	o.Notes["attemptsPerSec"] = round2(rate(int(load.attempts.Load()), elapsed))
	o.Notes["completedPerSec"] = round2(rate(completedInWindow, elapsed))
	o.Notes["attempts"] = load.attempts.Load()
	o.Notes["refusals503"] = load.refusals.Load()
	o.Notes["admitted"] = len(admitted)
	o.Notes["refusedNeverAdmitted"] = neverAdmitted
	o.Notes["windowMs"] = elapsed.Milliseconds()
	took, err := svc.stop(t)
	require.NoError(t, err)
	o.Notes["stopMs"] = took.Milliseconds()
	countAnswers(o, svc.engine)
	f := o.Check(t)
	assert.Zero(t, f.Duplicates, "tasks answered more than once")
}

// TestOverloadOnStreamTakesNoMoreThanCapacity offers twice the service's
// capacity on the StreamTasks pull intake: 200 tasks a second arrive at the
// engine for the executor. The service asks for no more than it can hold
// (each stream's max_concurrent at most THREAD_POOL_SIZE + QUEUE_SIZE), so
// the engine never has more than that in flight and the excess waits on
// its side; the service never admits more than its bounds, its memory
// plateaus, and every task it was sent is answered COMPLETED exactly once.
// Tasks still waiting at the engine when the window closes were never
// handed to the service, and are counted apart.
func TestOverloadOnStreamTakesNoMoreThanCapacity(t *testing.T) {
	svc, tap := startFixed(t, "stream")
	id := executorID(fixedType)
	o := &testkit.Outcome{Scenario: "overload at twice capacity, stream", Notes: map[string]any{}}
	window := overloadWindow()
	offered := overloadFactor * capacity()
	const run = "run-stream-overload"

	samples := startSampler(svc, tap)
	began := time.Now()
	// Tasks arrive at offered a second into the engine's backlog, a count
	// that costs no memory, and move to its task queue for the executor,
	// which holds at most stage of them: the test's own memory stays flat,
	// so that the samples judge the service's.
	const stage = 2 * admitLimit
	arrived := 0
	var enqueued []string
	pace(window, offered, func() {
		arrived++
		for len(enqueued) < arrived && svc.engine.Queued(id) < stage {
			node := fmt.Sprintf("n%06d", len(enqueued))
			svc.engine.Enqueue(id, streamTask(t, run, node, fixedType, 0, nil))
			enqueued = append(enqueued, key(run, node))
		}
	})
	leftover := svc.engine.Unqueue(id) // never sent to the service
	elapsed := time.Since(began)
	completedInWindow := completedIn(svc.engine)
	memory, loads := samples.finish()
	checkSamples(t, o, memory, loads)

	notSent := make(map[string]bool, len(leftover))
	for _, task := range leftover {
		notSent[key(task.GetRunId(), task.GetNodeId())] = true
	}
	var sent []string
	for _, k := range enqueued {
		if !notSent[k] {
			sent = append(sent, k)
		}
	}
	o.Submitted(sent...)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, svc.engine.WaitForResults(ctx, len(sent)), "tasks sent to the service not answered")
	requireAllCompleted(t, svc.engine, sent)
	assert.False(t, svc.exited(), "the service stopped under overload")
	backlog := arrived - len(sent)
	assert.Greater(t, float64(backlog), 0.25*float64(arrived), "the engine's backlog never grew: no overload was applied")

	asked := svc.engine.StreamMaxConcurrent(id)
	require.NotEmpty(t, asked)
	var maxInFlight int64
	for _, s := range loads {
		maxInFlight = max(maxInFlight, s.inFlight)
	}
	for _, n := range asked {
		assert.LessOrEqual(t, int(n), admitLimit, "a stream asked for more than THREAD_POOL_SIZE + QUEUE_SIZE: %v", asked)
	}
	assert.LessOrEqual(t, maxInFlight, int64(slices.Max(asked)), "the engine had more in flight than the stream asked for")

	o.Notes["capacityPerSec"] = capacity()
	o.Notes["offeredPerSec"] = offered
	o.Notes["arrivedPerSec"] = round2(rate(arrived, elapsed))
	o.Notes["completedPerSec"] = round2(rate(completedInWindow, elapsed))
	o.Notes["arrived"] = arrived
	o.Notes["sent"] = len(sent)
	o.Notes["backlogAtEngineNeverSent"] = backlog
	o.Notes["streamMaxConcurrent"] = asked
	o.Notes["maxInFlightAtEngine"] = maxInFlight
	o.Notes["windowMs"] = elapsed.Milliseconds()
	took, err := svc.stop(t)
	require.NoError(t, err)
	o.Notes["stopMs"] = took.Milliseconds()
	countAnswers(o, svc.engine)
	f := o.Check(t)
	assert.Zero(t, f.Duplicates, "tasks answered more than once")
}
