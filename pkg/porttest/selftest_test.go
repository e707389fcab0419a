package porttest_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The suites' own tests: a suite that cannot fail proves nothing. Each
// adapter below is the in-memory reference implementation wrapped so that
// it breaks exactly one promise of its port; the suite run against it must
// fail, in the scenario named. The same wrappers with no fault must pass
// every scenario, which shows that only the fault makes the difference.
//
// A suite takes a *testing.T and fails it, and a failed test cannot be
// passed again; so each broken adapter's suite runs in a child process, this
// test binary itself run again with brokenAdapterEnv naming the adapter, and
// the parent reads the child's verdicts (its "--- FAIL" lines and exit
// status). The suites run exactly as adapters' tests run them.

// brokenAdapterEnv names, in a child process, the broken adapter whose
// suite TestBrokenAdapterChild runs.
const brokenAdapterEnv = "PORTTEST_BROKEN_ADAPTER"

// brokenWait bounds the waits of the suites run against broken adapters: a
// broken promise often shows as a wait that never ends, and the suites'
// default (10 s) would only make the child slower.
const brokenWait = 5 * time.Second

// brokenAdapter is one adapter that breaks one promise of its port.
type brokenAdapter struct {
	name    string
	promise string // the promise it breaks, in the port's words
	// suite runs the port's suite against the adapter.
	suite func(t *testing.T)
	// failing are the scenarios (suite/scenario) that must fail.
	failing []string
	// runs is how many times its suite may run (1 if 0) for every
	// scenario of failing to have failed in one of the runs: a fault that
	// shows in a scenario only when the broken source wins a race against
	// its successor (it takes a later task first, or asks the intake for
	// room again within the watch) can lose that race on a loaded machine,
	// where every broken adapter's suite runs at once.
	runs int
}

var brokenAdapters = []brokenAdapter{
	{
		name:    "DoubleSettle",
		promise: "each task is offered once: its Settle runs once",
		suite:   faultySourceSuite(doubleSettle),
		failing: []string{"TaskSource/Delivery"},
	},
	{
		name:    "OfferAfterStop",
		promise: "when Stop returns, the source makes no further Offer",
		suite:   faultySourceSuite(offerAfterStop),
		failing: []string{"TaskSource/StopWithARefusedTaskInHand"},
	},
	{
		name:    "ReadsAfterStop",
		promise: "a stopped source takes nothing more from the engine: a successor takes over",
		suite:   faultySourceSuite(readsAfterStop),
		failing: []string{"TaskSource/Stop", "TaskSource/StopWithARefusedTaskInHand"},
		runs:    5, // Stop catches it only if it reads again before its successor has every task
	},
	{
		name:    "HoldsAfterStop",
		promise: "a stopped source takes nothing more from the engine: a successor takes over",
		suite:   faultySourceSuite(holdsAfterStop),
		failing: []string{"TaskSource/Stop"},
		runs:    5, // caught only if it takes a later task before its successor does
	},
	{
		name:    "NeverCommits",
		promise: "a task settled with nil is acknowledged: no successor receives it again",
		suite:   faultySourceSuite(neverCommits),
		failing: []string{"TaskSource/Acknowledgement", "TaskSource/SettleUntilClose"},
	},
	{
		name:    "SettleEndsAtStop",
		promise: "Settle is honoured until Close, after Stop too",
		suite:   faultySourceSuite(settleEndsAtStop),
		failing: []string{"TaskSource/SettleUntilClose"},
	},
	{
		name:    "SettleOutlivesClose",
		promise: "after Close, no Settle is honoured: an unsettled task stays the engine's",
		suite:   faultySourceSuite(settleOutlivesClose),
		failing: []string{"TaskSource/SettleUntilClose"},
	},
	{
		name:    "LostResult",
		promise: "Deliver returns nil only when the engine has every result",
		suite:   faultySinkSuite(lostResult),
		failing: []string{"ResultSink/FieldsPreserved", "ResultSink/Acknowledgement"},
	},
	{
		name:    "EarlyNil",
		promise: "Deliver returns nil only once the engine has acknowledged",
		suite:   faultySinkSuite(earlyNil),
		failing: []string{"ResultSink/Acknowledgement", "ResultSink/ContextEndsWhileHeld"},
	},
	{
		name:    "IgnoresContextWhileHeld",
		promise: "Deliver returns promptly with an error when ctx ends",
		suite:   faultySinkSuite(ignoresContextWhileHeld),
		failing: []string{"ResultSink/ContextEndsWhileHeld"},
	},
}

// TestReferencePassesTheSuites runs both suites against the reference
// implementation through the same wrappers as the broken adapters, with no
// fault.
func TestReferencePassesTheSuites(t *testing.T) {
	t.Run("Source", faultySourceSuite(faithfulSource))
	t.Run("Sink", faultySinkSuite(faithfulSink))
}

// TestBrokenAdaptersFailTheSuites runs the suite of each broken adapter in
// a child process and requires it to fail in the scenarios the adapter
// names.
func TestBrokenAdaptersFailTheSuites(t *testing.T) {
	if os.Getenv(brokenAdapterEnv) != "" {
		t.Skip("in a child process: TestBrokenAdapterChild runs the suite")
	}
	for _, b := range brokenAdapters {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			var out []byte
			var caught bool
			failed := map[string]bool{} // in any run
			for run := 1; run <= max(b.runs, 1); run++ {
				var err error
				out, err = runBrokenAdapter(t, b.name)
				var exit *exec.ExitError
				caught = caught || errors.As(err, &exit)
				for _, scenario := range failedScenarios(string(out)) {
					failed[scenario] = true
				}
				if caught && !slices.ContainsFunc(b.failing, func(s string) bool { return !failed[s] }) {
					break // every scenario that must fail has failed
				}
				t.Logf("run %d: not every scenario of %v failed yet against %s; running it again", run, b.failing, b.name)
			}
			t.Logf("%s breaks %q; scenarios failed: %s", b.name, b.promise, strings.Join(slices.Sorted(maps.Keys(failed)), ", "))
			require.True(t, caught, "the suite passed against %s, which breaks %q:\n%s", b.name, b.promise, out)
			for _, scenario := range b.failing {
				assert.True(t, failed[scenario], "scenario %s passed against %s, which breaks %q", scenario, b.name, b.promise)
			}
			if t.Failed() {
				t.Logf("last child output:\n%s", out)
			}
		})
	}
}

// runBrokenAdapter runs, in a child process, the suite of the broken
// adapter named name, and returns its output and its exit error (nil when
// the suite passed).
func runBrokenAdapter(t *testing.T, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBrokenAdapterChild$", "-test.count=1", "-test.v", "-test.timeout=3m")
	child.Env = append(os.Environ(), brokenAdapterEnv+"="+name)
	return child.CombinedOutput()
}

// TestBrokenAdapterChild runs, in a child process of
// TestBrokenAdaptersFailTheSuites, the suite of the broken adapter that
// brokenAdapterEnv names.
func TestBrokenAdapterChild(t *testing.T) {
	name := os.Getenv(brokenAdapterEnv)
	if name == "" {
		t.Skip("runs in a child process of TestBrokenAdaptersFailTheSuites")
	}
	i := slices.IndexFunc(brokenAdapters, func(b brokenAdapter) bool { return b.name == name })
	require.GreaterOrEqual(t, i, 0, "no broken adapter named %q", name)
	brokenAdapters[i].suite(t)
}

// failLine matches a failed subtest of TestBrokenAdapterChild and captures
// its suite/scenario part.
var failLine = regexp.MustCompile(`--- FAIL: TestBrokenAdapterChild/([A-Za-z]+/[A-Za-z]+) `)

// failedScenarios lists the scenarios (suite/scenario) a child reported
// failed.
func failedScenarios(out string) []string {
	var failed []string
	for _, m := range failLine.FindAllStringSubmatch(out, -1) {
		failed = append(failed, m[1])
	}
	slices.Sort(failed)
	return slices.Compact(failed)
}

// TestFailedScenarios checks the parsing the parent relies on, on lines as
// go test -v prints them.
func TestFailedScenarios(t *testing.T) {
	out := "=== RUN   TestBrokenAdapterChild/TaskSource/Stop\n" +
		"        --- FAIL: TestBrokenAdapterChild/TaskSource/Stop (5.01s)\n" +
		"        --- PASS: TestBrokenAdapterChild/TaskSource/Delivery (0.01s)\n" +
		"        --- FAIL: TestBrokenAdapterChild/ResultSink/ContextEndsWhileHeld (2.00s)\n" +
		"    --- FAIL: TestBrokenAdapterChild/TaskSource (0.00s)\n"
	assert.Equal(t, []string{"ResultSink/ContextEndsWhileHeld", "TaskSource/Stop"}, failedScenarios(out))
}

// sourceFault is the one promise a faultySource breaks.
type sourceFault int

const (
	// faithfulSource breaks nothing: the reference itself.
	faithfulSource sourceFault = iota
	// doubleSettle offers every accepted delivery a second time, so that
	// the runtime would settle it twice.
	doubleSettle
	// offerAfterStop retries a task the intake refused as overloaded on a
	// timer of its own, which Stop does not cancel.
	offerAfterStop
	// readsAfterStop makes Stop end Offers and return at once, while the
	// delivery loop never ends: it goes on waiting for room and taking the
	// next task, which it may not offer, so it hands it back to the queue at
	// once (a loop that checks for Stop only between taking and offering).
	readsAfterStop
	// holdsAfterStop is readsAfterStop holding the tasks it takes after
	// Stop until Close, as a stopped consumer that keeps its partitions.
	holdsAfterStop
	// neverCommits drops Settle(nil): no task is ever acknowledged.
	neverCommits
	// settleEndsAtStop ignores every Settle after Stop, as if Stop were
	// Close.
	settleEndsAtStop
	// settleOutlivesClose honours Settle after Close: Close never takes
	// back the unsettled tasks (the memory source before Close existed).
	settleOutlivesClose
)

// offerRetry paces offerAfterStop's retries.
const offerRetry = 20 * time.Millisecond

// faultySource is the memory engine's TaskSource with one fault: every
// call goes through it and through its intake, which change only what the
// fault needs.
type faultySource struct {
	inner ports.TaskSource
	fault sourceFault

	// offering is held (read) while an Offer is forwarded, so that the
	// Stop of readsAfterStop and holdsAfterStop, which end Offers but not
	// the delivery loop, still wait for an Offer in progress: their one
	// fault is the reading.
	offering sync.RWMutex

	mu      sync.Mutex
	intake  ports.Intake // the suite's
	stopped bool
	held    []ports.Delivery // holdsAfterStop: taken after Stop, not offered
}

var _ ports.TaskSource = (*faultySource)(nil)

func (s *faultySource) Start(ctx context.Context, intake ports.Intake) error {
	s.mu.Lock()
	s.intake = intake
	s.mu.Unlock()
	return s.inner.Start(ctx, &faultyIntake{source: s})
}

func (s *faultySource) Stop(ctx context.Context) error {
	s.offering.Lock() // waits for an Offer in progress
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.offering.Unlock()
	if s.fault == readsAfterStop || s.fault == holdsAfterStop {
		return nil // the delivery loop goes on
	}
	return s.inner.Stop(ctx)
}

func (s *faultySource) Close(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	held := s.held
	s.held = nil
	s.mu.Unlock()
	switch s.fault {
	case holdsAfterStop:
		for _, d := range held {
			d.Settle(fmt.Errorf("%w: taken after Stop, never offered", domain.ErrHandedBack))
		}
	case settleOutlivesClose:
		return s.inner.Stop(ctx)
	}
	return s.inner.Close(ctx)
}

func (s *faultySource) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// settleFor returns the Settle the suite's intake gets for a delivery whose
// source's own Settle is settle.
func (s *faultySource) settleFor(settle func(error)) func(error) {
	switch s.fault {
	case neverCommits:
		return func(err error) {
			if err != nil {
				settle(err)
			}
		}
	case settleEndsAtStop:
		return func(err error) {
			if !s.isStopped() {
				settle(err)
			}
		}
	}
	return settle
}

// retryLater offers d again after offerRetry, and again while the intake
// refuses it as overloaded, whatever became of the source meanwhile.
func (s *faultySource) retryLater(d ports.Delivery) {
	time.AfterFunc(offerRetry, func() {
		s.mu.Lock()
		in := s.intake
		s.mu.Unlock()
		switch err := in.Offer(context.Background(), d); {
		case errors.Is(err, domain.ErrOverloaded):
			s.retryLater(d)
		case err != nil:
			d.Settle(fmt.Errorf("%w: %w", domain.ErrHandedBack, err))
		}
	})
}

// faultyIntake is what the wrapped memory source offers to.
type faultyIntake struct {
	source *faultySource
}

func (in *faultyIntake) real() ports.Intake {
	in.source.mu.Lock()
	defer in.source.mu.Unlock()
	return in.source.intake
}

func (in *faultyIntake) Offer(ctx context.Context, d ports.Delivery) error {
	s := in.source
	d.Settle = s.settleFor(d.Settle)
	switch s.fault {
	case doubleSettle:
		err := in.real().Offer(ctx, d)
		if err == nil {
			_ = in.real().Offer(ctx, d)
		}
		return err
	case offerAfterStop:
		err := in.real().Offer(ctx, d)
		if errors.Is(err, domain.ErrOverloaded) {
			s.retryLater(d) // "taken": the source retries it itself
			return nil
		}
		return err
	case readsAfterStop, holdsAfterStop:
		s.offering.RLock()
		defer s.offering.RUnlock()
		s.mu.Lock()
		stopped := s.stopped
		if stopped && s.fault == holdsAfterStop {
			s.held = append(s.held, d)
		}
		s.mu.Unlock()
		switch {
		case stopped && s.fault == holdsAfterStop:
			return nil
		case stopped:
			// Not offered: the memory source puts a task refused as
			// overloaded back at the front of the queue, and waits for
			// room again.
			return fmt.Errorf("%w: stopped, the task goes back", domain.ErrOverloaded)
		}
	}
	return in.real().Offer(ctx, d)
}

func (in *faultyIntake) AwaitCapacity(ctx context.Context) (int, error) {
	if in.source.fault == holdsAfterStop && in.source.isStopped() {
		return 1, nil // it reads whether or not the runtime has room: it will not offer anyway
	}
	return in.real().AwaitCapacity(ctx)
}

func (in *faultyIntake) Cancel(taskID, reason string) bool { return in.real().Cancel(taskID, reason) }

// faultySourceSuite runs the TaskSource suite against the memory engine's
// source with fault, with every optional hook, so that no scenario is
// skipped.
func faultySourceSuite(fault sourceFault) func(t *testing.T) {
	return func(t *testing.T) {
		porttest.TaskSource(t, func(t *testing.T) porttest.TaskSourceHarness {
			engine := memory.NewBackend()
			newSource := func() ports.TaskSource { return &faultySource{inner: engine.TaskSource(), fault: fault} }
			h := porttest.TaskSourceHarness{
				Source: newSource(),
				Publish: func(_ context.Context, task domain.Task) error {
					engine.Submit(task)
					return nil
				},
				Cancel:     engine.Cancel,
				Redelivers: true,
				Successor:  newSource,
			}
			if fault != faithfulSource {
				h.WaitTimeout = brokenWait
			}
			return h
		})
	}
}

// sinkFault is the one promise a faultySink breaks.
type sinkFault int

const (
	// faithfulSink breaks nothing: the reference itself.
	faithfulSink sinkFault = iota
	// lostResult drops the last result of every batch and returns nil.
	lostResult
	// earlyNil returns nil as soon as the batch is queued; a writer
	// delivers the queue when the next Deliver comes (write-behind).
	earlyNil
	// ignoresContextWhileHeld checks ctx when called, but once the engine
	// holds the batch it waits for the answer whatever becomes of ctx.
	ignoresContextWhileHeld
)

// faultySink is the memory engine's ResultSink with one fault.
type faultySink struct {
	inner ports.ResultSink
	fault sinkFault

	mu     sync.Mutex
	behind [][]domain.Result // earlyNil: queued, not yet delivered
}

var _ ports.ResultSink = (*faultySink)(nil)

func (s *faultySink) Deliver(ctx context.Context, results []domain.Result) error {
	switch s.fault {
	case lostResult:
		if len(results) > 0 {
			results = results[:len(results)-1]
		}
	case earlyNil:
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		s.mu.Lock()
		queued := s.behind
		s.behind = [][]domain.Result{slices.Clone(results)}
		s.mu.Unlock()
		for _, batch := range queued {
			_ = s.inner.Deliver(context.WithoutCancel(ctx), batch)
		}
		return nil
	case ignoresContextWhileHeld:
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return s.inner.Deliver(context.WithoutCancel(ctx), results)
	}
	return s.inner.Deliver(ctx, results)
}

// faultySinkSuite runs the ResultSink suite against the memory engine's
// sink with fault, with every optional hook.
func faultySinkSuite(fault sinkFault) func(t *testing.T) {
	return func(t *testing.T) {
		porttest.ResultSink(t, func(t *testing.T) porttest.ResultSinkHarness {
			engine := memory.NewBackend()
			h := porttest.ResultSinkHarness{
				Sink:     &faultySink{inner: engine.ResultSink(), fault: fault},
				Received: engine.Results,
				Break:    func() { engine.FailDeliveries(1 << 30) },
				Restore:  func() { engine.FailDeliveries(0) },
				Hold:     engine.HoldDeliveries,
			}
			if fault != faithfulSink {
				h.WaitTimeout = brokenWait
			}
			return h
		})
	}
}
