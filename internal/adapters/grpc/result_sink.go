package grpc

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
)

// ResultSink delivers results in short ReportResults streams: it sends a
// batch, closes the stream and waits for the engine's Empty, which
// acknowledges the whole batch. Anything else is an error, and the runtime
// resends the batch (the engine deduplicates on run id, node id and attempt).
type ResultSink struct {
	client gamelanv1.ExecutorServiceClient
	// mirror, when set, also sends each result on a live ExecuteStream
	// before the acknowledged delivery (bidi intake).
	mirror func([]domain.Result)
}

var _ ports.ResultSink = (*ResultSink)(nil)

// NewResultSink returns a ResultSink calling the engine through client.
func NewResultSink(client gamelanv1.ExecutorServiceClient) *ResultSink {
	return &ResultSink{client: client}
}

// Deliver implements ports.ResultSink. Results are sent in one stream per
// executor id, so that each stream's token names the executor whose results
// it carries; the batch is delivered when every stream is acknowledged.
func (s *ResultSink) Deliver(ctx context.Context, results []domain.Result) error {
	if len(results) == 0 {
		return nil
	}
	if s.mirror != nil {
		s.mirror(results)
	}
	for _, group := range byExecutor(results) {
		if err := s.report(security.WithSubject(ctx, group[0].ExecutorID), group); err != nil {
			return err
		}
	}
	return nil
}

// report sends one ReportResults stream and waits for its Empty.
func (s *ResultSink) report(ctx context.Context, results []domain.Result) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we return early
	stream, err := s.client.ReportResults(ctx)
	if err != nil {
		return callError("report results", err)
	}
	for _, r := range results {
		if err := stream.Send(resultToProto(r)); err != nil {
			if errors.Is(err, io.EOF) {
				// The engine ended the stream; its status says why.
				_, err = stream.CloseAndRecv()
			}
			return callError(fmt.Sprintf("report %d results", len(results)), err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return callError(fmt.Sprintf("report %d results", len(results)), err)
	}
	return nil
}

// byExecutor splits results by executor id, keeping their order.
func byExecutor(results []domain.Result) [][]domain.Result {
	if len(results) == 1 {
		return [][]domain.Result{results}
	}
	index := make(map[string]int)
	var groups [][]domain.Result
	for _, r := range results {
		i, ok := index[r.ExecutorID]
		if !ok {
			i = len(groups)
			index[r.ExecutorID] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], r)
	}
	return groups
}
