package grpctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// ReportResults implements gamelanv1.ExecutorServiceServer: it reads the
// whole batch, records it, and only then answers Empty, which acknowledges
// every result of the batch. A call that FailReportResults set to fail reads
// the batch, records nothing, and fails with codes.Unavailable.
func (e *Engine) ReportResults(stream grpc.ClientStreamingServer[gamelanv1.TaskResult, emptypb.Empty]) error {
	var batch []*gamelanv1.TaskResult
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		batch = append(batch, r)
	}
	e.mu.Lock()
	if e.failReportResults > 0 {
		e.failReportResults--
		e.notifyLocked()
		e.mu.Unlock()
		return status.Errorf(codes.Unavailable, "report results: injected fault, batch of %d results not recorded", len(batch))
	}
	e.recordResultsLocked(batch)
	e.mu.Unlock()
	return stream.SendAndClose(&emptypb.Empty{})
}

// recordResultsLocked records results, deduplicates them on their key, and
// releases the tasks they answer. e.mu must be held.
func (e *Engine) recordResultsLocked(results []*gamelanv1.TaskResult) {
	for _, r := range results {
		e.results = append(e.results, r)
		key := taskKey(r.GetRunId(), r.GetNodeId(), r.GetAttempt())
		if _, seen := e.unique[key]; seen {
			e.duplicates++
		} else {
			e.unique[key] = r
		}
		e.releaseLocked(key)
	}
	e.notifyLocked()
}

// FailReportResults makes the next n ReportResults calls fail with
// codes.Unavailable after reading their batch, without recording it, so that
// an adapter's resend can be tested. n adds to faults not yet used.
func (e *Engine) FailReportResults(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failReportResults += n
}

// Results returns every result received, through ReportResults or
// ExecuteStream, in arrival order, duplicates included.
func (e *Engine) Results() []*gamelanv1.TaskResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	return cloneAll(e.results)
}

// UniqueResults returns the first result received for each
// "runId:nodeId:attempt" key (domain.IdempotencyKey): the engine's view
// after deduplication.
func (e *Engine) UniqueResults() map[string]*gamelanv1.TaskResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	unique := maps.Clone(e.unique)
	for k, r := range unique {
		unique[k] = proto.CloneOf(r)
	}
	return unique
}

// DuplicateResults returns how many results arrived for a key that already
// had one.
func (e *Engine) DuplicateResults() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.duplicates
}

// WaitForResults blocks until the engine holds at least n unique results, and
// returns nil, or until ctx ends, and returns an error naming how many it
// has, wrapping the context's cause.
func (e *Engine) WaitForResults(ctx context.Context, n int) error {
	for {
		e.mu.Lock()
		have := len(e.unique)
		changed := e.changed
		e.mu.Unlock()
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
