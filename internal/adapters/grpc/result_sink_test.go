package grpc

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// A result larger than the maximum message size is answered FAILED
// OUTPUT_TOO_LARGE, so that it does not hold the rest of its batch back for
// ever (the runtime would resend the batch until shutdown).
func TestResultSinkAnswersAnOversizedResult(t *testing.T) {
	engine, conn := startEngine(t)
	sink := NewResultSink(gamelanv1.NewExecutorServiceClient(conn), 0)
	small := domain.Result{TaskID: "small", RunID: "run-small", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-small",
		ExecutorID: taxExecutorID, Status: domain.StatusCompleted, Output: map[string]any{"tax": 21.0}, CompletedAt: time.Now()}
	huge := domain.Result{TaskID: "huge", RunID: "run-huge", NodeID: "calculate", Attempt: 1, ExecutionToken: "token-huge",
		ExecutorID: taxExecutorID, Status: domain.StatusCompleted, Output: map[string]any{"report": strings.Repeat("x", 5<<20)}, CompletedAt: time.Now()}
	batch := []domain.Result{huge, small}

	err := sink.Deliver(testContext(t), batch)
	require.NoError(t, err, "a batch holding one oversized result can never be delivered")
	unique := engine.UniqueResults()
	require.Contains(t, unique, domain.IdempotencyKey("run-small", "calculate", 1))
	got := unique[domain.IdempotencyKey("run-huge", "calculate", 1)]
	require.NotNil(t, got, "no answer for the oversized result")
	assert.Equal(t, "token-huge", got.GetExecutionToken())
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, got.GetStatus())
	assert.NotEmpty(t, got.GetError().GetCode())
}

// stallingEngine is a grpctest engine whose ExecuteStream takes the opening
// heartbeat and then stops reading (a slow or stuck engine; the Gamelan
// engine never sends tasks on ExecuteStream and needs to read nothing).
type stallingEngine struct{ *grpctest.Engine }

func (s stallingEngine) ExecuteStream(stream ggrpc.BidiStreamingServer[gamelanv1.ExecutorMessage, gamelanv1.EngineMessage]) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// Mirroring results on the ExecuteStream never blocks Deliver: an engine
// that stops reading the stream (flow control stalls every Send) does not
// keep Deliver past its context.
func TestBidiDeliverIsNotHeldByAStalledStream(t *testing.T) {
	engine := grpctest.NewEngine()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// A fixed 64 KiB window, as an engine without window auto-tuning has.
	server := ggrpc.NewServer(ggrpc.InitialWindowSize(64<<10), ggrpc.InitialConnWindowSize(64<<10))
	gamelanv1.RegisterExecutorServiceServer(server, stallingEngine{Engine: engine})
	go func() { _ = server.Serve(lis) }()
	t.Cleanup(server.Stop)
	conn := dial(t, ClientConfig{Target: lis.Addr().String()})

	source, sink := newTestIntake(t, conn, IntakeBidi, taxRegistration(), fastReconnect)
	startSource(t, source, porttest.NewIntake(4))
	bidi := source.pull.(*BidiSource)
	require.Eventually(t, func() bool {
		bidi.mu.Lock()
		defer bidi.mu.Unlock()
		return bidi.senders[taxExecutorID] != nil
	}, waitTimeout, time.Millisecond, "the ExecuteStream never opened")

	var results []domain.Result
	for _, id := range []string{"1", "2", "3"} {
		results = append(results, domain.Result{TaskID: "t" + id, RunID: "run-" + id, NodeID: "calculate", Attempt: 1,
			ExecutionToken: "token-" + id, ExecutorID: taxExecutorID, Status: domain.StatusCompleted,
			Output: map[string]any{"report": strings.Repeat("x", 256<<10)}, CompletedAt: time.Now()})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	delivered := make(chan error, 1)
	go func() { delivered <- sink.Deliver(ctx, results) }()
	select {
	case err := <-delivered:
		require.NoError(t, err, "ReportResults is not the stalled stream: the results are acknowledged")
		assert.Len(t, engine.UniqueResults(), len(results))
	case <-time.After(waitTimeout):
		t.Errorf("Deliver with a 500ms deadline still blocked after %s, in the mirror write on the ExecuteStream", waitTimeout)
		require.NoError(t, source.Stop(context.Background())) // ends the stream, releasing Deliver
		<-delivered
	}
}

// A result that fits the limit as a TaskResult, and so goes out whole
// through ReportResults, but not once wrapped in an ExecutorMessage, is
// not mirrored on the ExecuteStream: grpc-go would end the stream over it.
func TestBidiMirrorSkipsAResultAtTheLimit(t *testing.T) {
	const limit = 64 << 10
	engine := grpctest.NewEngine()
	conn := dial(t, ClientConfig{Target: engine.Start(t), MaxMessageSize: limit})
	require.NoError(t, NewRegistrar(gamelanv1.NewExecutorServiceClient(conn)).Register(testContext(t), taxRegistration()))
	source, sink, err := NewIntake(conn, newPushServer(t, ServerConfig{}), IntakeConfig{
		Mode: IntakeBidi, Executors: []domain.Registration{taxRegistration()}, Reconnect: fastReconnect, MaxMessageSize: limit,
	}, testLogger())
	require.NoError(t, err)
	startSource(t, source, porttest.NewIntake(4))
	bidi := source.pull.(*BidiSource)
	liveSender := func() *bidiSender {
		bidi.mu.Lock()
		defer bidi.mu.Unlock()
		return bidi.senders[taxExecutorID]
	}
	require.Eventually(t, func() bool { return liveSender() != nil }, waitTimeout, time.Millisecond, "the ExecuteStream never opened")
	sender := liveSender()

	result := func(id string, outputBytes int) domain.Result {
		return domain.Result{TaskID: "t" + id, RunID: "run-" + id, NodeID: "calculate", Attempt: 1, ExecutionToken: "token-" + id,
			ExecutorID: taxExecutorID, Status: domain.StatusCompleted, CompletedAt: time.Now(),
			Output: map[string]any{"report": strings.Repeat("x", outputBytes)}}
	}
	atLimit := result("1", limit-300)
	atLimit.Output["report"] = strings.Repeat("x", limit-300+limit-proto.Size(resultToProto(atLimit)))
	require.Equal(t, limit, proto.Size(resultToProto(atLimit)))

	require.NoError(t, sink.Deliver(testContext(t), []domain.Result{atLimit}))
	require.NoError(t, sink.Deliver(testContext(t), []domain.Result{result("2", 10)}))
	// The small result, sent after, arrives twice (stream and
	// ReportResults): the stream outlived the result at the limit.
	require.Eventually(t, func() bool { return len(engine.Results()) == 3 }, waitTimeout, time.Millisecond,
		"results received: %d", len(engine.Results()))
	assert.Same(t, sender, liveSender(), "the ExecuteStream was reopened")
	select {
	case <-sender.done:
		t.Fatalf("the stream's writer stopped: %v", sender.err)
	default:
	}
	got := engine.UniqueResults()[domain.IdempotencyKey("run-1", "calculate", 1)]
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, got.GetStatus(), "the result at the limit was sent whole")
}
