package grpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
)

// ResultSink delivers results in short ReportResults streams: it sends a
// batch, closes the stream and waits for the engine's Empty, which
// acknowledges the whole batch. Anything else is an error, and the runtime
// resends the batch (the engine deduplicates on run id, node id and attempt).
//
// A result larger than the maximum message size (the whole TaskResult
// message, ids included) could never be sent, and would hold its batch back
// for ever: it is sent as a FAILED OUTPUT_TOO_LARGE result without output
// instead (domain.Result.TooLarge), and if even that does not fit, the
// batch is refused with domain.ErrResultRejected. So is a batch the engine
// refuses for good (InvalidArgument, ResourceExhausted: its own size limit,
// OutOfRange): the runtime then isolates the result at fault rather than
// resending the batch for ever.
type ResultSink struct {
	client  gamelanv1.ExecutorServiceClient
	maxSize int
	// watch, when set, is told when the engine answers that it does not
	// know an executor, and reports the connection's signs (see
	// ConnectionWatch) to the runtime.
	watch *ConnectionWatch
}

var (
	_ ports.ResultSink          = (*ResultSink)(nil)
	_ ports.RegistrationWatcher = (*ResultSink)(nil)
)

// DefaultMaxMessageSize is grpc-go's default limit on a received message,
// which is the engine's unless it raised it.
const DefaultMaxMessageSize = 4 << 20

func orDefaultMaxSize(size int) int {
	if size <= 0 {
		return DefaultMaxMessageSize
	}
	return size
}

// NewResultSink returns a ResultSink calling the engine through client,
// sending messages of at most maxMessageSize bytes (DefaultMaxMessageSize
// if 0): the connection's limit, and the engine's.
func NewResultSink(client gamelanv1.ExecutorServiceClient, maxMessageSize int) *ResultSink {
	return &ResultSink{client: client, maxSize: orDefaultMaxSize(maxMessageSize)}
}

// Deliver implements ports.ResultSink. Results are sent in one stream per
// executor id, so that each stream's token names the executor whose results
// it carries; the batch is delivered when every stream is acknowledged.
func (s *ResultSink) Deliver(ctx context.Context, results []domain.Result) error {
	for _, group := range byExecutor(results) {
		executorID := group[0].ExecutorID
		messages := make([]*gamelanv1.TaskResult, len(group))
		for i, r := range group {
			msg, err := s.message(r)
			if err != nil {
				return err
			}
			messages[i] = msg
		}
		if err := s.report(reportContext(ctx, executorID, group), messages); err != nil {
			if isNotRegistered(err) && s.watch != nil {
				s.watch.Suspect("the engine answered ReportResults for " + executorID + " with NotFound")
			}
			return err
		}
	}
	return nil
}

// Watching makes the sink tell watch when the engine answers that it does
// not know an executor, and report watch's signs to the runtime. It
// returns s.
func (s *ResultSink) Watching(watch *ConnectionWatch) *ResultSink {
	s.watch = watch
	return s
}

// RegistrationSuspects implements ports.RegistrationWatcher: the watch's
// channel, or nil (never receiving) without a watch.
func (s *ResultSink) RegistrationSuspects() <-chan string {
	if s.watch == nil {
		return nil
	}
	return s.watch.RegistrationSuspects()
}

// reportContext is the context of the ReportResults call carrying group:
// the executor's token subject and, when the call carries exactly one
// result whose task brought its trace context in per-task metadata (a
// push, a REST post), that trace context as the call's metadata. A call
// carrying several results has no per-result metadata: the runtime links
// its delivery span to each task's span instead. A result whose task
// brought its trace context in its context carries it in its output
// (resultToProto), whatever the batch.
func reportContext(ctx context.Context, executorID string, group []domain.Result) context.Context {
	ctx = security.WithSubject(ctx, executorID)
	if len(group) == 1 && !group[0].Trace.FromContext() {
		ctx = withTraceMetadata(ctx, group[0].Trace)
	}
	return ctx
}

// report sends one ReportResults stream and waits for its Empty.
func (s *ResultSink) report(ctx context.Context, results []*gamelanv1.TaskResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we return early
	stream, err := s.client.ReportResults(ctx)
	if err != nil {
		return callError("report results", err)
	}
	for _, r := range results {
		if err := stream.Send(r); err != nil {
			if errors.Is(err, io.EOF) {
				// The engine ended the stream; its status says why.
				if _, err = stream.CloseAndRecv(); err == nil {
					err = errors.New("the engine ended the stream before taking every result")
				}
			}
			return reportError(len(results), err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return reportError(len(results), err)
	}
	return nil
}

// reportError wraps a failed ReportResults, marking the refusals that
// resending the same batch cannot overcome with domain.ErrResultRejected:
// InvalidArgument, OutOfRange, and ResourceExhausted about a message's size
// (servers also answer ResourceExhausted to say "not now", which is
// transient).
func reportError(n int, err error) error {
	op := fmt.Sprintf("report %d results", n)
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return fmt.Errorf("%s: %w: %w", op, domain.ErrResultRejected, err)
	case codes.ResourceExhausted:
		if aboutSize(st.Message()) {
			return fmt.Errorf("%s: %w: %w", op, domain.ErrResultTooLarge, err)
		}
	}
	return callError(op, err)
}

// aboutSize reports whether a ResourceExhausted message is about a message
// too large, as grpc-go ("larger than max"), grpc-java ("exceeds maximum
// size") and gRPC C-core ("larger than max") word it.
func aboutSize(message string) bool {
	m := strings.ToLower(message)
	return strings.Contains(m, "larger than max") || strings.Contains(m, "exceeds maximum") || strings.Contains(m, "too large")
}

// message converts r, replacing it with its TooLarge answer when it would
// exceed the maximum message size, and refuses it (ErrResultRejected) when
// even that would.
func (s *ResultSink) message(r domain.Result) (*gamelanv1.TaskResult, error) {
	msg := resultToProto(r)
	size := proto.Size(msg)
	if size <= s.maxSize {
		return msg, nil
	}
	small := r.TooLarge(size, s.maxSize)
	small.Trace = r.Trace // bounded and small: the engine's trace still gets its answer
	msg = resultToProto(small)
	if minimal := proto.Size(msg); minimal > s.maxSize {
		return nil, fmt.Errorf("%w: result for run %s node %s is %d bytes even without output, more than the limit of %d",
			domain.ErrResultTooLarge, domain.Quote(r.RunID), domain.Quote(r.NodeID), minimal, s.maxSize)
	}
	return msg, nil
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
