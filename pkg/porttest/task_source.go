package porttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// TaskSourceHarness is one TaskSource under test and the engine side that
// feeds it. Each harness must be isolated: its source delivers only what its
// own Publish made available.
type TaskSourceHarness struct {
	// Source is the adapter under test, not yet started. The suite starts
	// it once, and stops and closes it when the scenario ends.
	Source ports.TaskSource
	// Publish makes a task available to Source, as the engine does when it
	// dispatches one (produce to the topic, queue it for the stream, POST it
	// to the push endpoint). It must not wait for the task to be offered: a
	// push harness whose request is refused (503) retries in the background
	// until the harness's test ends. Required.
	Publish func(ctx context.Context, task domain.Task) error
	// Cancel cancels a task from the engine side, with a reason, and
	// reports whether the engine sent the cancellation. Nil when the
	// transport cannot cancel; the Cancellation scenario is then skipped.
	Cancel func(taskID, reason string) bool
	// Redelivers reports that Settle with an error makes the source deliver
	// the task again (Kafka: the offset is not committed). The suite also
	// requires Delivery.Redeliverable to equal it.
	Redelivers bool
	// Push reports a source that offers tasks as the engine sends them and
	// answers ErrOverloaded with a refusal (503) instead of waiting on
	// AwaitCapacity. Pull sources (Push false) must never hit ErrOverloaded
	// from a single intake, and must stop offering after ErrDraining.
	Push bool
	// Successor returns another, unstarted source of the same engine queue,
	// topic or consumer group, or is nil when there is none. With it, the
	// Stop and Draining scenarios prove that what the first source did not
	// take is still there, which also bounds their observation without
	// relying on QuietPeriod; and, when Redelivers, the Acknowledgement and
	// SettleUntilClose scenarios prove what Settle committed: a task settled
	// with nil before Close never reaches the successor, a task left
	// unsettled at Close does. The suite stops and closes every successor it
	// starts.
	Successor func() ports.TaskSource
	// Unsupported lists the task fields the transport cannot carry.
	Unsupported []Field
	// WaitTimeout bounds each wait for a delivery; DefaultWaitTimeout if zero.
	WaitTimeout time.Duration
	// QuietPeriod is how long the suite watches for a delivery that must not
	// happen when nothing later can bound the watch; DefaultQuietPeriod if
	// zero.
	QuietPeriod time.Duration
}

// TaskSource runs the TaskSource contract scenarios, each as a parallel
// subtest with its own harness from newHarness:
//
//   - Delivery: tasks published before and after Start are each offered
//     exactly once, with every supported field intact and
//     Delivery.Redeliverable equal to Redelivers.
//   - FlowControl: with capacity 3 and 20 tasks published, the source fills
//     the capacity and never exceeds it, a pull source never even hits
//     ErrOverloaded, and settling one by one brings all 20, each once.
//   - OverloadRefusal: an Offer refused with ErrOverloaded is not lost: the
//     task is offered again and accepted once.
//   - InvalidTaskRefusal: a task refused with ErrInvalidTask is dropped
//     after one attempt, and the tasks around it still arrive.
//   - Acknowledgement: a task settled with nil is not delivered again, and
//     (Redelivers and Successor) not to a successor either once the source
//     is closed: it was committed.
//   - Redelivery (Redelivers only): a task settled with an error wrapping
//     domain.ErrHandedBack is delivered again, intact.
//   - Cancellation (Cancel only): the engine's cancellation of an offered
//     task reaches Intake.Cancel with an id that finds the task.
//   - StopWithoutStart: Stop and Close before Start, twice each, return nil.
//   - Stop: after Stop returns (twice, nil) the source makes no Offer or
//     AwaitCapacity call although tasks are published and a task offered
//     before Stop is settled: with a Successor, until the successor has
//     received them (and, if Redelivers, the task handed back after Stop),
//     then for QuietPeriod more: a stopped source neither offers nor keeps
//     reading, and a successor takes over.
//   - StopWithARefusedTaskInHand: Stop while the source holds a task the
//     intake keeps refusing as overloaded: no call follows Stop's return (no
//     retry outlives Stop), and with Redelivers and a Successor the task
//     reaches the successor.
//   - StopWaitsForAnOfferInProgress: Stop does not return while an Offer is
//     in progress, and no Offer follows its return.
//   - SettleUntilClose: Settle is honoured until Close. Of two tasks offered
//     before Stop, one settled with nil after Stop and before Close, the
//     other after Close, both Settle calls return promptly, and Close
//     returns nil, twice; with Redelivers and a Successor, the successor
//     receives the task settled after Close (nothing was committed for it)
//     and never the one settled before.
//   - Draining (pull sources only): after the intake starts draining the
//     source makes at most one more Offer, which the intake refuses, and does
//     not spin on AwaitCapacity; with a Successor, the refused task is not
//     lost.
//   - CancelledStartContext: Start with an already cancelled context either
//     returns an error, or returns nil and then delivers nothing; Stop
//     returns nil either way.
//
// Every source the suite starts is stopped, its leftovers settled, and
// closed when the scenario ends.
func TaskSource(t *testing.T, newHarness func(t *testing.T) TaskSourceHarness) {
	t.Helper()
	runScenarios(t, "TaskSource", func(t *testing.T) *sourceScenario {
		h := newHarness(t)
		require.NotNil(t, h.Source, "TaskSourceHarness.Source")
		require.NotNil(t, h.Publish, "TaskSourceHarness.Publish")
		// Registered first, so it runs last: whatever the scenario did, the
		// source is closed (Close is idempotent and safe without Start).
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), orDefault(h.WaitTimeout, DefaultWaitTimeout))
			defer cancel()
			if err := h.Source.Close(ctx); err != nil {
				t.Errorf("Close at the end of the scenario: %v", err)
			}
		})
		return &sourceScenario{
			t:           t,
			h:           h,
			run:         UniqueID(t),
			wait:        orDefault(h.WaitTimeout, DefaultWaitTimeout),
			quiet:       orDefault(h.QuietPeriod, DefaultQuietPeriod),
			unsupported: fieldSet(h.Unsupported),
		}
	}, []scenario[*sourceScenario]{
		{"Delivery", testSourceDelivery},
		{"FlowControl", testSourceFlowControl},
		{"OverloadRefusal", testSourceOverloadRefusal},
		{"InvalidTaskRefusal", testSourceInvalidTaskRefusal},
		{"Acknowledgement", testSourceAcknowledgement},
		{"Redelivery", testSourceRedelivery},
		{"Cancellation", testSourceCancellation},
		{"StopWithoutStart", testSourceStopWithoutStart},
		{"Stop", testSourceStop},
		{"StopWithARefusedTaskInHand", testSourceStopWithARefusedTaskInHand},
		{"SettleUntilClose", testSourceSettleUntilClose},
		{"StopWaitsForAnOfferInProgress", testSourceStopWaitsForAnOfferInProgress},
		{"Draining", testSourceDraining},
		{"CancelledStartContext", testSourceCancelledStartContext},
	})
}

// sourceScenario is the state one TaskSource scenario works with.
type sourceScenario struct {
	t           *testing.T
	h           TaskSourceHarness
	run         string // the scenario's run id: every task it publishes belongs to it
	wait        time.Duration
	quiet       time.Duration
	unsupported fieldSet
}

// task returns the scenario's i-th task, every field set.
func (s *sourceScenario) task(i int) domain.Task {
	return domain.Task{
		TaskID:         fmt.Sprintf("%s-task-%d", s.run, i),
		RunID:          s.run,
		NodeID:         fmt.Sprintf("node-%d", i),
		NodeName:       fmt.Sprintf("Calculate tax %d", i),
		NodeType:       "calculate-tax",
		ExecutorType:   "tax-calculator",
		ExecutorID:     "tax-service-tax-calculator",
		Attempt:        1 + i%3,
		ExecutionToken: fmt.Sprintf("token-%d-%s", i, s.run),
		IdempotencyKey: domain.IdempotencyKey(s.run, fmt.Sprintf("node-%d", i), 1+i%3),
		Context: map[string]any{
			"orderId":  fmt.Sprintf("ORDER-%d", i),
			"amount":   1234.5 + float64(i),
			"quantity": 3 + i,
			"express":  i%2 == 0,
			"customer": map[string]any{
				"name":    "Zoë Ångström",
				"address": map[string]any{"city": "Malmö", "zip": "211 20"},
			},
			"items": []any{"sku-1", 2, map[string]any{"sku": "X-1", "qty": 1}},
		},
		Configuration: map[string]any{
			"region": "EU",
			"rates":  map[string]any{"standard": 0.25, "reduced": 0.12},
		},
		Timeout:     time.Duration(60+i) * time.Second,
		ScheduledAt: time.UnixMilli(1767225600123 + int64(i)*1001).UTC(),
	}
}

func (s *sourceScenario) publish(tasks ...domain.Task) {
	s.t.Helper()
	for _, task := range tasks {
		ctx, cancel := context.WithTimeout(context.Background(), s.wait)
		err := s.h.Publish(ctx, task)
		cancel()
		require.NoError(s.t, err, "publish task %s", task.TaskID)
	}
}

// start starts src with a fresh Intake of the given capacity, and stops it
// when the scenario ends.
func (s *sourceScenario) start(src ports.TaskSource, capacity int) *Intake {
	s.t.Helper()
	in := NewIntake(capacity)
	s.stopAtCleanup(src, in)
	require.NoError(s.t, src.Start(s.t.Context(), in), "Start")
	return in
}

// stopAtCleanup stops src when the scenario ends, settles what it left
// outstanding (acknowledged), then closes it.
func (s *sourceScenario) stopAtCleanup(src ports.TaskSource, in *Intake) {
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.wait)
		defer cancel()
		if err := src.Stop(ctx); err != nil {
			s.t.Errorf("Stop at the end of the scenario: %v", err)
		}
		in.SettleAll(nil)
		if err := src.Close(ctx); err != nil {
			s.t.Errorf("Close at the end of the scenario: %v", err)
		}
	})
}

func (s *sourceScenario) close(src ports.TaskSource) {
	s.t.Helper()
	err := returnsWithin(s.t, "Close", 2*s.wait, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), s.wait)
		defer cancel()
		return src.Close(ctx)
	})
	require.NoError(s.t, err, "Close")
}

func (s *sourceScenario) stop(src ports.TaskSource) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	require.NoError(s.t, src.Stop(ctx), "Stop")
}

func (s *sourceScenario) waitFor(in *Intake, what string, cond func() bool) {
	s.t.Helper()
	waitIntake(s.t, in, s.wait, what, cond)
}

// waitAccepted waits until every task was accepted at least once.
func (s *sourceScenario) waitAccepted(in *Intake, tasks ...domain.Task) {
	s.t.Helper()
	s.waitFor(in, fmt.Sprintf("%d tasks to be offered", len(tasks)), func() bool {
		for _, task := range tasks {
			if len(accepted(in, task)) == 0 {
				return false
			}
		}
		return true
	})
}

// settle settles o, failing the test if the source's callback blocks.
func (s *sourceScenario) settle(o *Offered, err error) {
	s.t.Helper()
	settled := false
	_ = returnsPromptly(s.t, "Settle", func() error { settled = o.Settle(err); return nil })
	require.True(s.t, settled, "task %s was settled before", o.Task.TaskID)
}

// sameTask reports whether two tasks have the same identity (run id, node
// id, attempt), the one part of a task every transport carries.
func sameTask(a, b domain.Task) bool {
	return a.RunID == b.RunID && a.NodeID == b.NodeID && a.Attempt == b.Attempt
}

// accepted returns the accepted offers of task, in order.
func accepted(in *Intake, task domain.Task) []*Offered {
	var out []*Offered
	for _, o := range in.Offers() {
		if sameTask(o.Task, task) {
			out = append(out, o)
		}
	}
	return out
}

// refused returns the refused offers of task, in order.
func refused(in *Intake, task domain.Task) []Refusal {
	var out []Refusal
	for _, r := range in.Refusals() {
		if sameTask(r.Task, task) {
			out = append(out, r)
		}
	}
	return out
}

// requireOnce asserts that each task was accepted exactly once.
func (s *sourceScenario) requireOnce(in *Intake, tasks ...domain.Task) {
	s.t.Helper()
	for _, task := range tasks {
		require.Len(s.t, accepted(in, task), 1, "task %s: times offered and accepted", task.TaskID)
	}
}

// sentinel publishes a fresh task and waits until it is offered, then
// settles it: whatever the source would have delivered before it has been
// delivered by then, which bounds a check that something was NOT delivered.
func (s *sourceScenario) sentinel(in *Intake, i int) {
	s.t.Helper()
	task := s.task(i)
	task.NodeID = fmt.Sprintf("sentinel-%d", i)
	task.IdempotencyKey = task.Key()
	s.publish(task)
	s.waitAccepted(in, task)
	s.settle(accepted(in, task)[0], nil)
}

func (s *sourceScenario) requireFields(want, got domain.Task) {
	t := s.t
	t.Helper()
	assert.Equal(t, want.RunID, got.RunID, "RunID")
	assert.Equal(t, want.NodeID, got.NodeID, "NodeID")
	assert.Equal(t, want.Attempt, got.Attempt, "Attempt")
	strings := []struct {
		field     Field
		want, got string
	}{
		{FieldTaskID, want.TaskID, got.TaskID},
		{FieldTaskNodeName, want.NodeName, got.NodeName},
		{FieldTaskNodeType, want.NodeType, got.NodeType},
		{FieldTaskExecutorType, want.ExecutorType, got.ExecutorType},
		{FieldTaskExecutorID, want.ExecutorID, got.ExecutorID},
		{FieldTaskExecutionToken, want.ExecutionToken, got.ExecutionToken},
		{FieldTaskIdempotencyKey, want.IdempotencyKey, got.IdempotencyKey},
	}
	for _, f := range strings {
		if s.unsupported.supports(f.field) {
			assert.Equal(t, f.want, f.got, "field %s", f.field)
		}
	}
	if s.unsupported.supports(FieldTaskContext) {
		equalJSON(t, want.Context, got.Context, FieldTaskContext)
	}
	if s.unsupported.supports(FieldTaskConfiguration) {
		equalJSON(t, want.Configuration, got.Configuration, FieldTaskConfiguration)
	}
	if s.unsupported.supports(FieldTaskTimeout) {
		assert.Equal(t, want.Timeout, got.Timeout, "field %s", FieldTaskTimeout)
	}
	if s.unsupported.supports(FieldTaskScheduledAt) {
		equalMillis(t, want.ScheduledAt, got.ScheduledAt, FieldTaskScheduledAt)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func testSourceDelivery(s *sourceScenario) {
	const n = 10
	tasks := make([]domain.Task, n)
	for i := range tasks {
		tasks[i] = s.task(i)
	}
	s.publish(tasks[:n/2]...) // before Start: the engine holds them until the source serves
	in := s.start(s.h.Source, n+1)
	s.publish(tasks[n/2:]...)
	s.waitAccepted(in, tasks...)
	s.sentinel(in, n)

	s.requireOnce(in, tasks...)
	for _, want := range tasks {
		got := accepted(in, want)[0]
		s.requireFields(want, got.Task)
		require.Equal(s.t, s.h.Redelivers, got.Redeliverable, "task %s: Delivery.Redeliverable", want.TaskID)
	}
}

func testSourceFlowControl(s *sourceScenario) {
	const capacity, n = 3, 20
	tasks := make([]domain.Task, n)
	for i := range tasks {
		tasks[i] = s.task(i)
	}
	in := s.start(s.h.Source, capacity)
	s.publish(tasks...)

	for settled := 0; settled < n; settled++ {
		want := min(settled+capacity, n)
		s.waitFor(in, fmt.Sprintf("%d tasks offered after %d settled (capacity %d)", want, settled, capacity), func() bool {
			return len(in.Offers()) >= want
		})
		offers := in.Offers()
		require.LessOrEqual(s.t, len(offers), settled+capacity, "tasks offered after %d of them were settled, with capacity %d", settled, capacity)
		s.settle(in.Outstanding()[0], nil)
	}
	s.sentinel(in, n)

	s.requireOnce(in, tasks...)
	require.LessOrEqual(s.t, in.MaxOutstanding(), capacity, "unsettled tasks held at once")
	if !s.h.Push {
		for _, r := range in.Refusals() {
			require.NotErrorIs(s.t, r.Err, domain.ErrOverloaded,
				"a pull source offered task %s while the intake had no room: it must wait on AwaitCapacity", r.Task.TaskID)
		}
	}
}

func testSourceOverloadRefusal(s *sourceScenario) {
	in := NewIntake(4)
	in.RefuseNext(fmt.Errorf("%w: porttest refuses the first offer", domain.ErrOverloaded))
	s.stopAtCleanup(s.h.Source, in)
	require.NoError(s.t, s.h.Source.Start(s.t.Context(), in), "Start")
	task := s.task(0)
	s.publish(task)

	s.waitAccepted(in, task)
	s.sentinel(in, 1)
	require.Len(s.t, refused(in, task), 1, "refusals of task %s: the intake refused it once as overloaded", task.TaskID)
	s.requireOnce(in, task)
}

func testSourceInvalidTaskRefusal(s *sourceScenario) {
	in := NewIntake(8)
	tasks := []domain.Task{s.task(0), s.task(1), s.task(2), s.task(3)}
	invalid := tasks[1]
	in.RefuseMatching(func(t domain.Task) bool { return sameTask(t, invalid) },
		fmt.Errorf("%w: porttest refuses task %s", domain.ErrInvalidTask, invalid.TaskID))
	s.stopAtCleanup(s.h.Source, in)
	require.NoError(s.t, s.h.Source.Start(s.t.Context(), in), "Start")
	s.publish(tasks...)

	valid := []domain.Task{tasks[0], tasks[2], tasks[3]}
	s.waitAccepted(in, valid...)
	s.waitFor(in, "the invalid task to be offered", func() bool { return len(refused(in, invalid)) > 0 })
	s.sentinel(in, len(tasks))

	require.Len(s.t, refused(in, invalid), 1, "offers of the invalid task %s: a refused task must be dropped, not retried", invalid.TaskID)
	require.Empty(s.t, accepted(in, invalid), "the invalid task was accepted")
	s.requireOnce(in, valid...)
}

func testSourceAcknowledgement(s *sourceScenario) {
	in := s.start(s.h.Source, 4)
	task := s.task(0)
	s.publish(task)
	s.waitAccepted(in, task)
	s.settle(accepted(in, task)[0], nil)

	s.sentinel(in, 1)
	s.requireOnce(in, task)
	if !s.h.Redelivers || s.h.Successor == nil {
		return
	}
	// What the source committed outlives it: the successor that takes over
	// its queue, topic or group never receives the acknowledged task. (A
	// source that never commits passes everything above: it just never
	// delivers a task twice while it runs.)
	s.stop(s.h.Source)
	s.close(s.h.Source)
	next := s.start(s.h.Successor(), 4)
	s.sentinel(next, 2)
	require.Empty(s.t, accepted(next, task), "the successor received task %s, which was acknowledged: the source did not commit it", task.TaskID)
}

func testSourceRedelivery(s *sourceScenario) {
	if !s.h.Redelivers {
		s.t.Skip("the source does not redeliver handed-back tasks (Redelivers is false)")
	}
	in := s.start(s.h.Source, 4)
	task := s.task(0)
	s.publish(task)
	s.waitAccepted(in, task)
	s.settle(accepted(in, task)[0], fmt.Errorf("%w: porttest hands it back", domain.ErrHandedBack))

	s.waitFor(in, "the handed-back task to be offered again", func() bool { return len(accepted(in, task)) >= 2 })
	again := accepted(in, task)[1]
	s.requireFields(task, again.Task)
	s.settle(again, nil)

	s.sentinel(in, 1)
	require.Len(s.t, accepted(in, task), 2, "offers of task %s: once, and once more after it was handed back", task.TaskID)
}

func testSourceCancellation(s *sourceScenario) {
	if s.h.Cancel == nil {
		s.t.Skip("the engine side cannot cancel tasks (Cancel is nil)")
	}
	in := s.start(s.h.Source, 4)
	task := s.task(0)
	s.publish(task)
	s.waitAccepted(in, task)
	offered := accepted(in, task)[0].Task

	const reason = "run aborted by porttest"
	s.h.Cancel(task.TaskID, reason)
	ids := []string{task.TaskID, offered.ID(), offered.Key(), domain.IdempotencyKey(task.RunID, task.NodeID, task.Attempt)}
	var call CancelCall
	s.waitFor(in, fmt.Sprintf("Intake.Cancel for task %s", task.TaskID), func() bool {
		for _, c := range in.Cancels() {
			for _, id := range ids {
				if c.TaskID == id {
					call = c
					return true
				}
			}
		}
		return false
	})
	require.True(s.t, call.Found, "Intake.Cancel(%q) did not find the offered task", call.TaskID)
	if s.unsupported.supports(FieldCancelReason) {
		require.Equal(s.t, reason, call.Reason, "field %s", FieldCancelReason)
	}
}

func testSourceStopWithoutStart(s *sourceScenario) {
	for i := range 2 {
		err := returnsPromptly(s.t, "Stop without Start", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), s.wait)
			defer cancel()
			return s.h.Source.Stop(ctx)
		})
		require.NoError(s.t, err, "Stop without Start, call %d", i+1)
	}
	for i := range 2 {
		err := returnsPromptly(s.t, "Close without Start", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), s.wait)
			defer cancel()
			return s.h.Source.Close(ctx)
		})
		require.NoError(s.t, err, "Close without Start, call %d", i+1)
	}
}

// stoppedCalls counts the calls a stopped source must no longer make on
// its intake: Offer (accepted or refused) and AwaitCapacity, which a pull
// source makes before it takes the next task.
func stoppedCalls(in *Intake) int { return in.Attempts() + in.AwaitCalls() }

// requireQuietAfterStop checks that a stopped source makes no Offer or
// AwaitCapacity call on in, whose count was calls when Stop returned: until
// the successor next (if any) has received every task of want, which it
// requires, and then for QuietPeriod more, since a source that keeps going
// after Stop need not offer before the successor is served (a retry timer,
// a late poll). A successor may receive a task more than once (a consumer
// group rebalancing as the stopped source leaves it).
func (s *sourceScenario) requireQuietAfterStop(in *Intake, calls int, next *Intake, want ...domain.Task) {
	s.t.Helper()
	quiet := func() bool { return stoppedCalls(in) == calls }
	const what = "the source called its intake (Offer or AwaitCapacity) after Stop returned"
	if next != nil {
		// Watch the stopped intake while waiting for the successor, so that
		// a stopped source that goes on reading fails here at once rather
		// than as a successor that waits in vain.
		watch, stopWatching := context.WithCancel(context.Background())
		defer stopWatching()
		broke := make(chan struct{})
		go func() {
			if in.WaitUntil(watch, func() bool { return !quiet() }) == nil {
				close(broke)
				next.wake()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), s.wait)
		defer cancel()
		err := next.WaitUntil(ctx, func() bool {
			select {
			case <-broke:
				return true
			default:
			}
			for _, task := range want {
				if len(accepted(next, task)) == 0 {
					return false
				}
			}
			return true
		})
		select {
		case <-broke:
			s.t.Fatalf("%s; stopped source's %s", what, in)
		default:
		}
		if err != nil {
			s.t.Fatalf("waited %s for the successor to receive %d tasks: %v; successor's %s; stopped source's %s", s.wait, len(want), err, next, in)
		}
	}
	staysTrue(s.t, in, s.quiet, what, quiet)
}

func testSourceStop(s *sourceScenario) {
	in := s.start(s.h.Source, 4)
	first := s.task(0)
	s.publish(first)
	s.waitAccepted(in, first)

	s.stop(s.h.Source)
	s.stop(s.h.Source) // idempotent
	calls := stoppedCalls(in)
	later := []domain.Task{s.task(1), s.task(2)}
	s.publish(later...)

	// A task offered before Stop stays valid: its Settle is honoured.
	handedBack := s.h.Redelivers && s.h.Successor != nil
	if handedBack {
		s.settle(accepted(in, first)[0], fmt.Errorf("%w: porttest hands it back after Stop", domain.ErrHandedBack))
	} else {
		s.settle(accepted(in, first)[0], nil)
	}

	if s.h.Successor == nil {
		s.requireQuietAfterStop(in, calls, nil)
		return
	}
	next := s.start(s.h.Successor(), 4)
	expected := later
	if handedBack {
		expected = append(expected, first)
	}
	s.requireQuietAfterStop(in, calls, next, expected...)
}

// testSourceStopWithARefusedTaskInHand stops a source while the intake
// keeps refusing a task as overloaded, so that the source holds it and
// retries: the retry must not outlive Stop.
func testSourceStopWithARefusedTaskInHand(s *sourceScenario) {
	in := NewIntake(4)
	held := s.task(0)
	refusing := true
	var mu sync.Mutex
	in.RefuseMatching(func(t domain.Task) bool {
		mu.Lock()
		defer mu.Unlock()
		return refusing && sameTask(t, held)
	}, fmt.Errorf("%w: porttest keeps refusing task %s", domain.ErrOverloaded, held.TaskID))
	s.stopAtCleanup(s.h.Source, in)
	require.NoError(s.t, s.h.Source.Start(s.t.Context(), in), "Start")
	s.publish(held)
	s.waitFor(in, "the refused task to be offered again", func() bool { return len(refused(in, held)) >= 2 })

	s.stop(s.h.Source)
	calls := stoppedCalls(in)
	mu.Lock()
	refusing = false // a retry after Stop would now be accepted
	mu.Unlock()
	if !s.h.Redelivers || s.h.Successor == nil {
		// A source that cannot give the task back (a stream: the engine
		// reassigns it after its timeout; a push: the engine retries the
		// 503) only has to stop.
		s.requireQuietAfterStop(in, calls, nil)
		return
	}
	next := s.start(s.h.Successor(), 4)
	s.requireQuietAfterStop(in, calls, next, held)
}

// testSourceSettleUntilClose checks that Settle is honoured until Close: a
// Settle after Stop and before Close commits (acknowledges) its task; after
// Close, nothing is.
func testSourceSettleUntilClose(s *sourceScenario) {
	in := s.start(s.h.Source, 4)
	kept, dropped := s.task(0), s.task(1)
	// One after the other, so that a source with ordered commits (a Kafka
	// partition) can commit kept without dropped.
	s.publish(kept)
	s.waitAccepted(in, kept)
	s.publish(dropped)
	s.waitAccepted(in, dropped)

	s.stop(s.h.Source)
	s.settle(accepted(in, kept)[0], nil) // after Stop, before Close: honoured
	s.close(s.h.Source)
	s.close(s.h.Source)                     // idempotent
	s.settle(accepted(in, dropped)[0], nil) // after Close: returns, and nothing is honoured

	if !s.h.Redelivers || s.h.Successor == nil {
		return // nothing committed is observable: the source has no Settle to honour, or no successor to tell
	}
	next := s.start(s.h.Successor(), 4)
	s.waitAccepted(next, dropped)
	s.sentinel(next, 2)
	require.Empty(s.t, accepted(next, kept),
		"the successor received task %s, which was settled with nil after Stop and before Close: the source did not honour that Settle", kept.TaskID)
	s.requireOnce(next, dropped)
	s.requireFields(dropped, accepted(next, dropped)[0].Task)
}

// testSourceStopWaitsForAnOfferInProgress holds an Offer in progress and
// stops the source meanwhile: Stop must not return before that Offer has,
// since no Offer may follow Stop's return, and none may start afterwards.
func testSourceStopWaitsForAnOfferInProgress(s *sourceScenario) {
	in := NewIntake(4)
	entered, release := in.BlockNextOffer()
	s.t.Cleanup(release)
	s.stopAtCleanup(s.h.Source, in)
	require.NoError(s.t, s.h.Source.Start(s.t.Context(), in), "Start")
	first := s.task(0)
	s.publish(first)
	select {
	case <-entered:
	case <-time.After(s.wait):
		s.t.Fatalf("waited %s for an Offer; %s", s.wait, in)
	}

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*s.wait)
		defer cancel()
		stopped <- s.h.Source.Stop(ctx)
	}()
	select {
	case err := <-stopped:
		s.t.Fatalf("Stop returned (%v) while an Offer was in progress: that Offer follows Stop's return", err)
	case <-time.After(s.quiet):
	}
	release()
	select {
	case err := <-stopped:
		require.NoError(s.t, err, "Stop")
	case <-time.After(s.wait):
		s.t.Fatalf("Stop did not return within %s of the Offer in progress returning", s.wait)
	}
	for _, o := range in.Outstanding() {
		s.settle(o, nil)
	}
	attempts := in.Attempts()
	s.publish(s.task(1))
	staysTrue(s.t, in, s.quiet, "the source offered a task after Stop returned", func() bool { return in.Attempts() == attempts })
}

func testSourceDraining(s *sourceScenario) {
	if s.h.Push {
		s.t.Skip("a push source offers what the engine pushes; ErrDraining becomes a refusal the engine sees")
	}
	in := s.start(s.h.Source, 4)
	first := s.task(0)
	s.publish(first)
	s.waitAccepted(in, first)

	in.Drain()
	acceptedBefore, awaitsBefore := len(in.Offers()), in.AwaitCalls()
	late := s.task(1)
	s.publish(late)
	const maxAwaits = 10
	staysTrue(s.t, in, s.quiet, "the source kept going after the intake started draining", func() bool {
		return len(in.Offers()) == acceptedBefore && len(in.Refusals()) <= 1 && in.AwaitCalls()-awaitsBefore <= maxAwaits
	})
	s.settle(accepted(in, first)[0], nil) // still honoured while draining

	if s.h.Successor == nil {
		return
	}
	s.stop(s.h.Source)
	next := s.start(s.h.Successor(), 4)
	s.waitAccepted(next, late)
	s.requireOnce(next, late)
}

func testSourceCancelledStartContext(s *sourceScenario) {
	in := NewIntake(4)
	s.stopAtCleanup(s.h.Source, in)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := returnsPromptly(s.t, "Start with a cancelled context", func() error { return s.h.Source.Start(ctx, in) })
	if err != nil {
		s.t.Logf("Start with a cancelled context returned an error, as allowed: %v", err)
	} else {
		s.publish(s.task(0))
		staysTrue(s.t, in, s.quiet, "Start with a cancelled context returned nil, then the source offered a task",
			func() bool { return in.Attempts() == 0 })
	}
	s.stop(s.h.Source)
}
