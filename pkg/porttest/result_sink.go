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

// ResultSinkHarness is one ResultSink under test and the engine side that
// receives its results.
type ResultSinkHarness struct {
	// Sink is the adapter under test.
	Sink ports.ResultSink
	// Received returns every result the engine received, in order,
	// duplicates included. It may include other scenarios' results (a
	// shared topic): the suite filters by its own run ids. Required.
	Received func() []domain.Result
	// Break makes the engine or broker unreachable, so that Deliver must
	// fail; Restore undoes it. Both nil when the harness cannot inject the
	// fault; the BrokenAndRestored scenario is then skipped.
	Break, Restore func()
	// Hold makes the engine or broker take deliveries and leave them
	// unanswered, as one that hangs does, until release is called: held is
	// closed once a Deliver call has reached it and waits for its answer.
	// release may be called more than once. Nil when the harness cannot;
	// the ContextEndsWhileHeld scenario is then skipped.
	Hold func() (held <-chan struct{}, release func())
	// ReceivedLags reports that Received observes the engine side
	// asynchronously (a consumer reading the results topic), so that a
	// result acknowledged by the broker may show up in Received a little
	// later. When false, every result of a batch must be in Received by the
	// time Deliver returns nil.
	ReceivedLags bool
	// Unsupported lists the result fields the transport cannot carry.
	Unsupported []Field
	// WaitTimeout bounds Deliver calls and waits; DefaultWaitTimeout if zero.
	WaitTimeout time.Duration
}

// ResultSink runs the ResultSink contract scenarios, each as a parallel
// subtest with its own harness from newHarness:
//
//   - FieldsPreserved: results of every status, with nested output and a
//     full error (code, message, stack, context, retryable), arrive with
//     every supported field intact (times at millisecond precision).
//   - Acknowledgement: once Deliver returns nil, every result of the batch
//     is in Received (eventually, if ReceivedLags).
//   - ResendIsSafe: delivering the same batch twice returns nil both times,
//     and the results deduplicated by key equal the batch.
//   - Concurrency: 16 goroutines delivering 50 results each, in batches,
//     all succeed and all 800 results arrive.
//   - EmptyBatch: Deliver of a nil or empty batch returns nil.
//   - CancelledContext: Deliver with a cancelled or expired context returns
//     an error promptly.
//   - ContextEndsWhileHeld (Hold only): a Deliver the engine holds
//     unanswered does not return before the engine has it, and returns an
//     error promptly once its context ends; once released, the sink
//     delivers again.
//   - BrokenAndRestored (Break and Restore only): while broken Deliver
//     returns an error; once restored it delivers again.
func ResultSink(t *testing.T, newHarness func(t *testing.T) ResultSinkHarness) {
	t.Helper()
	runScenarios(t, "ResultSink", func(t *testing.T) *sinkScenario {
		h := newHarness(t)
		require.NotNil(t, h.Sink, "ResultSinkHarness.Sink")
		require.NotNil(t, h.Received, "ResultSinkHarness.Received")
		return &sinkScenario{
			t:           t,
			h:           h,
			run:         UniqueID(t),
			wait:        orDefault(h.WaitTimeout, DefaultWaitTimeout),
			unsupported: fieldSet(h.Unsupported),
		}
	}, []scenario[*sinkScenario]{
		{"FieldsPreserved", testSinkFieldsPreserved},
		{"Acknowledgement", testSinkAcknowledgement},
		{"ResendIsSafe", testSinkResendIsSafe},
		{"Concurrency", testSinkConcurrency},
		{"EmptyBatch", testSinkEmptyBatch},
		{"CancelledContext", testSinkCancelledContext},
		{"ContextEndsWhileHeld", testSinkContextEndsWhileHeld},
		{"BrokenAndRestored", testSinkBrokenAndRestored},
	})
}

// sinkScenario is the state one ResultSink scenario works with.
type sinkScenario struct {
	t           *testing.T
	h           ResultSinkHarness
	run         string // the scenario's run id: every result it delivers belongs to it
	wait        time.Duration
	unsupported fieldSet
}

// result returns the scenario's i-th result with the given status and every
// field that status allows set.
func (s *sinkScenario) result(i int, status domain.Status) domain.Result {
	r := domain.Result{
		TaskID:         fmt.Sprintf("%s-task-%d", s.run, i),
		RunID:          s.run,
		NodeID:         fmt.Sprintf("node-%d", i),
		Attempt:        1 + i%3,
		ExecutionToken: fmt.Sprintf("token-%d-%s", i, s.run),
		ExecutorID:     "tax-service-tax-calculator",
		Status:         status,
		CompletedAt:    time.UnixMilli(1767225600123 + int64(i)*1001).UTC(),
		Duration:       time.Duration(1500+i) * time.Millisecond,
	}
	switch status {
	case domain.StatusCompleted:
		r.Output = map[string]any{
			"tax":      12.25 + float64(i),
			"count":    7 + i,
			"currency": "EUR",
			"approved": true,
			"breakdown": map[string]any{
				"vat":   10.5,
				"lines": []any{1, 2.5, "three", map[string]any{"sku": "X-1"}},
			},
		}
	case domain.StatusFailed:
		r.Output = map[string]any{"partial": true}
		r.Error = &domain.ErrorInfo{
			Code:       "INVALID_ORDER",
			Message:    fmt.Sprintf("order ORDER-%d has no lines", i),
			StackTrace: "goroutine 7 [running]:\nmain.calculate()\n\t/app/tax.go:42 +0x1d",
			Context:    map[string]any{"orderId": fmt.Sprintf("ORDER-%d", i), "limits": map[string]any{"max": 100, "min": 0.5}},
			Retryable:  (i/4)%2 == 0, // the batches' failures alternate: retryable, permanent
		}
	case domain.StatusCancelled:
		r.Error = &domain.ErrorInfo{Code: domain.CodeCancelled, Message: "cancelled by the engine"}
	}
	return r
}

// batch returns results from..to-1, cycling through the statuses.
func (s *sinkScenario) batch(from, to int) []domain.Result {
	statuses := []domain.Status{domain.StatusCompleted, domain.StatusFailed, domain.StatusCancelled, domain.StatusSkipped}
	out := make([]domain.Result, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, s.result(i, statuses[i%len(statuses)]))
	}
	return out
}

func (s *sinkScenario) deliver(results []domain.Result) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	return s.h.Sink.Deliver(ctx, results)
}

// received returns the first result received for each key of this
// scenario's run, and how many of the run's results were received in all.
func (s *sinkScenario) received() (map[string]domain.Result, int) {
	first := make(map[string]domain.Result)
	n := 0
	for _, r := range s.h.Received() {
		if r.RunID != s.run {
			continue
		}
		n++
		if _, ok := first[r.Key()]; !ok {
			first[r.Key()] = r
		}
	}
	return first, n
}

// requireReceived requires every result of want to be in Received: at once,
// or eventually when the harness's Received lags.
func (s *sinkScenario) requireReceived(want []domain.Result) map[string]domain.Result {
	s.t.Helper()
	missing := func() []string {
		got, _ := s.received()
		var keys []string
		for _, r := range want {
			if _, ok := got[r.Key()]; !ok {
				keys = append(keys, r.Key())
			}
		}
		return keys
	}
	if s.h.ReceivedLags {
		eventually(s.t, s.wait, func() bool { return len(missing()) == 0 }, "acknowledged results never reached the engine")
	} else if m := missing(); len(m) > 0 {
		s.t.Fatalf("Deliver returned nil, but %d of %d results are not in Received (first: %s)", len(m), len(want), m[0])
	}
	got, _ := s.received()
	return got
}

func (s *sinkScenario) requireFields(want, got domain.Result) {
	t := s.t
	t.Helper()
	assert.Equal(t, want.RunID, got.RunID, "RunID")
	assert.Equal(t, want.NodeID, got.NodeID, "NodeID")
	assert.Equal(t, want.Attempt, got.Attempt, "Attempt")
	assert.Equal(t, want.Status, got.Status, "Status")
	strings := []struct {
		field     Field
		want, got string
	}{
		{FieldResultTaskID, want.TaskID, got.TaskID},
		{FieldResultExecutionToken, want.ExecutionToken, got.ExecutionToken},
		{FieldResultExecutorID, want.ExecutorID, got.ExecutorID},
	}
	for _, f := range strings {
		if s.unsupported.supports(f.field) {
			assert.Equal(t, f.want, f.got, "field %s", f.field)
		}
	}
	if s.unsupported.supports(FieldResultOutput) {
		equalJSON(t, want.Output, got.Output, FieldResultOutput)
	}
	if s.unsupported.supports(FieldResultCompletedAt) {
		equalMillis(t, want.CompletedAt, got.CompletedAt, FieldResultCompletedAt)
	}
	if s.unsupported.supports(FieldResultDuration) {
		assert.Equal(t, want.Duration.Milliseconds(), got.Duration.Milliseconds(), "field %s in ms", FieldResultDuration)
	}
	switch {
	case want.Error == nil:
		// A wire may carry an absent error as an empty one.
		if got.Error != nil {
			assert.Empty(t, got.Error.Code, "error code of a %s result without error", want.Status)
			assert.Empty(t, got.Error.Message, "error message of a %s result without error", want.Status)
		}
	case assert.NotNil(t, got.Error, "Error of a %s result", want.Status):
		assert.Equal(t, want.Error.Code, got.Error.Code, "Error.Code")
		assert.Equal(t, want.Error.Message, got.Error.Message, "Error.Message")
		if s.unsupported.supports(FieldResultErrorStackTrace) {
			assert.Equal(t, want.Error.StackTrace, got.Error.StackTrace, "field %s", FieldResultErrorStackTrace)
		}
		if s.unsupported.supports(FieldResultErrorContext) {
			equalJSON(t, want.Error.Context, got.Error.Context, FieldResultErrorContext)
		}
		if s.unsupported.supports(FieldResultErrorRetryable) {
			assert.Equal(t, want.Error.Retryable, got.Error.Retryable, "field %s", FieldResultErrorRetryable)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func testSinkFieldsPreserved(s *sinkScenario) {
	want := s.batch(0, 8) // every status twice, retryable and permanent failures
	require.NoError(s.t, s.deliver(want), "Deliver")
	got := s.requireReceived(want)
	for _, w := range want {
		s.requireFields(w, got[w.Key()])
	}
}

func testSinkAcknowledgement(s *sinkScenario) {
	first, second := s.batch(0, 20), s.batch(20, 21)
	require.NoError(s.t, s.deliver(first), "Deliver")
	s.requireReceived(first)
	require.NoError(s.t, s.deliver(second), "Deliver of a single result")
	s.requireReceived(second)
}

func testSinkResendIsSafe(s *sinkScenario) {
	want := s.batch(0, 6)
	require.NoError(s.t, s.deliver(want), "first Deliver")
	require.NoError(s.t, s.deliver(want), "Deliver of the same batch again")
	got := s.requireReceived(want)
	require.Len(s.t, got, len(want), "distinct keys received")
	for _, w := range want {
		s.requireFields(w, got[w.Key()])
	}
}

func testSinkConcurrency(s *sinkScenario) {
	const goroutines, perGoroutine, batchSize = 16, 50, 5
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		sent   []domain.Result
		starts = make(chan struct{})
	)
	for g := range goroutines {
		wg.Go(func() {
			<-starts // maximise overlap
			for b := 0; b < perGoroutine; b += batchSize {
				from := g*perGoroutine + b
				batch := s.batch(from, from+batchSize)
				err := s.deliver(batch)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					sent = append(sent, batch...)
				}
				mu.Unlock()
			}
		})
	}
	close(starts)
	wg.Wait()
	require.Empty(s.t, errs, "concurrent Deliver calls failed")
	require.Len(s.t, sent, goroutines*perGoroutine)
	got := s.requireReceived(sent)
	require.Len(s.t, got, goroutines*perGoroutine, "distinct keys received")
}

func testSinkEmptyBatch(s *sinkScenario) {
	require.NoError(s.t, s.deliver(nil), "Deliver(nil)")
	require.NoError(s.t, s.deliver([]domain.Result{}), "Deliver of an empty batch")
	// The sink still works afterwards.
	one := s.batch(0, 1)
	require.NoError(s.t, s.deliver(one), "Deliver after empty batches")
	s.requireReceived(one)
}

func testSinkCancelledContext(s *sinkScenario) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	err := returnsPromptly(s.t, "Deliver with a cancelled context", func() error {
		return s.h.Sink.Deliver(cancelled, s.batch(0, 3))
	})
	require.Error(s.t, err, "Deliver with a cancelled context")

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err = returnsPromptly(s.t, "Deliver with an expired context", func() error {
		return s.h.Sink.Deliver(expired, s.batch(3, 6))
	})
	require.Error(s.t, err, "Deliver with an expired context")
}

func testSinkBrokenAndRestored(s *sinkScenario) {
	if s.h.Break == nil || s.h.Restore == nil {
		s.t.Skip("the harness cannot break the engine connection (Break or Restore is nil)")
	}
	restored := false
	s.h.Break()
	s.t.Cleanup(func() {
		if !restored {
			s.h.Restore()
		}
	})
	require.Error(s.t, s.deliver(s.batch(0, 3)), "Deliver while the engine is unreachable")

	s.h.Restore()
	restored = true
	after := s.batch(3, 6)
	require.NoError(s.t, s.deliver(after), "Deliver once the engine is back")
	s.requireReceived(after)
}

// testSinkContextEndsWhileHeld checks the promise that CancelledContext
// cannot: a Deliver that has reached the engine and waits for its answer
// still returns promptly when its context ends (a sink that checks ctx only
// on entry passes CancelledContext and fails here).
func testSinkContextEndsWhileHeld(s *sinkScenario) {
	if s.h.Hold == nil {
		s.t.Skip("the harness cannot make the engine hold a delivery (Hold is nil)")
	}
	held, release := s.h.Hold()
	s.t.Cleanup(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.h.Sink.Deliver(ctx, s.batch(0, 3)) }()
	select {
	case <-held:
	case err := <-done:
		s.t.Fatalf("Deliver returned (%v) before the engine received the batch: nil must wait for its acknowledgement", err)
	case <-time.After(s.wait):
		s.t.Fatalf("waited %s for the engine to receive the batch", s.wait)
	}

	cancel()
	select {
	case err := <-done:
		require.Error(s.t, err, "Deliver returned nil although the engine never answered")
	case <-time.After(promptly):
		s.t.Fatalf("Deliver did not return within %s of its context ending while the engine held it", promptly)
	}

	release()
	after := s.batch(3, 6)
	require.NoError(s.t, s.deliver(after), "Deliver once the engine answers again")
	s.requireReceived(after)
}
