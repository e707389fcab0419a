package memory

import (
	"context"
	"fmt"
	"strings"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// ResultSink delivers results to the engine. A nil return means the engine
// has recorded every result of the batch.
type ResultSink struct {
	engine *Backend
}

var _ ports.ResultSink = (*ResultSink)(nil)

// Deliver records copies of results, in order, and returns nil; the engine
// deduplicates them on (run id, node id, attempt). It records nothing and
// returns an error when ctx has ended, also while HoldDeliveries holds it,
// or when a delivery fault is injected (wrapping ErrInjected). An empty batch is a successful no-op, unless a
// fault is injected: every call counts against FailDeliveries.
func (s *ResultSink) Deliver(ctx context.Context, results []domain.Result) error {
	if ctx.Err() != nil {
		return fmt.Errorf("deliver %d results to the memory engine: %w", len(results), context.Cause(ctx))
	}
	copies := make([]domain.Result, len(results))
	for i, r := range results {
		copies[i] = cloneResult(r)
	}

	e := s.engine
	e.mu.Lock()
	hold := e.hold
	e.mu.Unlock()
	if hold != nil {
		hold.enter()
		select {
		case <-hold.release:
		case <-ctx.Done():
			return fmt.Errorf("deliver %d results to the memory engine: held without an answer: %w", len(results), context.Cause(ctx))
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failDeliveries > 0 {
		e.failDeliveries--
		return fmt.Errorf("deliver %d results (%s) to the memory engine: %w", len(results), describeIDs(results), ErrInjected)
	}
	for _, r := range copies {
		e.results.add(r)
		key := r.Key()
		if _, seen := e.unique[key]; seen {
			continue
		}
		e.unique[key] = r
		e.uniqueCount++
		if evicted, ok := e.uniqueKeys.add(key); ok {
			delete(e.unique, evicted)
		}
	}
	if len(copies) > 0 {
		e.notifyLocked()
	}
	return nil
}

// describeIDs is used in error messages naming a batch of results.
func describeIDs(results []domain.Result) string {
	const shown = 3
	keys := make([]string, 0, shown)
	for i, r := range results {
		if i == shown {
			keys = append(keys, fmt.Sprintf("and %d more", len(results)-shown))
			break
		}
		keys = append(keys, r.Key())
	}
	return strings.Join(keys, ", ")
}
