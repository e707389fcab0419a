package grpctest

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// Results records results and deduplicates them on their key, the first
// one winning. A ReportResults batch (executorID empty) that
// FailReportResults set to fail records nothing and fails with
// codes.Unavailable.
func (r *recorder) Results(executorID string, results []*gamelanv1.TaskResult) error {
	return r.TracedResults(executorID, results, nil)
}

// TracedResults records results as Results does, with the trace context
// each one carried back (traces[i] for results[i]; nil for none).
func (r *recorder) TracedResults(executorID string, results []*gamelanv1.TaskResult, traces []*domain.TraceContext) error {
	r.mu.Lock()
	hold := r.hold
	r.mu.Unlock()
	if executorID == "" && hold != nil {
		hold.enter()
		<-hold.release // the caller may have given up meanwhile: the batch is still recorded
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if executorID == "" && r.failReportResults > 0 {
		r.failReportResults--
		r.notifyLocked()
		return status.Errorf(codes.Unavailable, "report results: injected fault, batch of %d results not recorded", len(results))
	}
	for i, res := range results {
		res = proto.CloneOf(res)
		r.results = append(r.results, res)
		key := grpcengine.ResultKey(res)
		if _, seen := r.unique[key]; seen {
			r.duplicates++
		} else {
			r.unique[key] = res
			if i < len(traces) {
				r.traces[key] = traces[i]
			}
		}
	}
	r.notifyLocked()
	return nil
}

// FailReportResults makes the next n ReportResults calls fail with
// codes.Unavailable after reading their batch, without recording it, so that
// an adapter's resend can be tested. n adds to faults not yet used.
func (e *Engine) FailReportResults(n int) {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	e.rec.failReportResults += n
}

// resultHold holds ReportResults batches unanswered (HoldReportResults).
type resultHold struct {
	held, release chan struct{}
	entered       sync.Once
}

func (h *resultHold) enter() { h.entered.Do(func() { close(h.held) }) }

// HoldReportResults makes ReportResults take batches and leave them
// unanswered, as an engine that hangs does, until release is called; then
// the held batches are recorded and answered. held is closed when the first
// batch is held. release may be called more than once.
func (e *Engine) HoldReportResults() (held <-chan struct{}, release func()) {
	h := &resultHold{held: make(chan struct{}), release: make(chan struct{})}
	e.rec.mu.Lock()
	e.rec.hold = h
	e.rec.mu.Unlock()
	var once sync.Once
	return h.held, func() {
		once.Do(func() {
			e.rec.mu.Lock()
			if e.rec.hold == h {
				e.rec.hold = nil
			}
			e.rec.mu.Unlock()
			close(h.release)
		})
	}
}

// Results returns every result received, through ReportResults or
// ExecuteStream, in arrival order, duplicates included.
func (e *Engine) Results() []*gamelanv1.TaskResult {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return cloneAll(e.rec.results)
}

// UniqueResults returns the first result received for each
// "runId:nodeId:attempt" key (domain.IdempotencyKey): the engine's view
// after deduplication.
func (e *Engine) UniqueResults() map[string]*gamelanv1.TaskResult {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	unique := maps.Clone(e.rec.unique)
	for k, r := range unique {
		unique[k] = proto.CloneOf(r)
	}
	return unique
}

// ResultTrace returns the trace context the first result received for key
// ("runId:nodeId:attempt") carried back: its output's reserved keys, or the
// metadata of a ReportResults call that carried it alone. It reports false
// when no result arrived for key.
func (e *Engine) ResultTrace(key string) (domain.TraceContext, bool) {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	if _, ok := e.rec.unique[key]; !ok {
		return domain.TraceContext{}, false
	}
	if tc := e.rec.traces[key]; tc != nil {
		return *tc, true
	}
	return domain.TraceContext{}, true
}

// DuplicateResults returns how many results arrived for a key that already
// had one.
func (e *Engine) DuplicateResults() int {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return e.rec.duplicates
}

// WaitForResults blocks until the engine holds at least n unique results, and
// returns nil, or until ctx ends, and returns an error naming how many it
// has, wrapping the context's cause.
func (e *Engine) WaitForResults(ctx context.Context, n int) error {
	for {
		e.rec.mu.Lock()
		have := len(e.rec.unique)
		changed := e.rec.changed
		e.rec.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d unique results, have %d: %w", n, have, context.Cause(ctx))
		}
	}
}
