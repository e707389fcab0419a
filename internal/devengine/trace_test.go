package devengine

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// pushRecorder is an executor's push endpoint on a real listener: it
// accepts every task and keeps each call's metadata.
type pushRecorder struct {
	dispatcherpb.UnimplementedExecutorServer
	mu    sync.Mutex
	calls []metadata.MD
	got   chan struct{}
}

func (p *pushRecorder) Execute(ctx context.Context, _ *dispatcherpb.ExecutionRequest) (*dispatcherpb.ExecutionAck, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	p.mu.Lock()
	p.calls = append(p.calls, md.Copy())
	p.mu.Unlock()
	p.got <- struct{}{}
	return &dispatcherpb.ExecutionAck{Accepted: true, Code: 200}, nil
}

// startTracedGRPC serves the engine's gRPC side and a push recorder on
// 127.0.0.1, registers the recorder as executor "tax-1", and returns the
// engine, a client of its ExecutorService and the recorder.
func startTracedGRPC(t *testing.T, cfg Config) (*Engine, gamelanv1.ExecutorServiceClient, *pushRecorder) {
	t.Helper()
	e := New(cfg)
	g := NewGRPC(e, grpcengine.Config{}, slog.New(slog.DiscardHandler))
	e.SetDeliverer("GRPC", g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, g.Server().Start(lis))
	t.Cleanup(g.Server().Close)
	runEngine(t, e)

	push := &pushRecorder{got: make(chan struct{}, 4)}
	server := ggrpc.NewServer()
	dispatcherpb.RegisterExecutorServer(server, push)
	pushLis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = server.Serve(pushLis) }()
	t.Cleanup(server.Stop)

	conn, err := ggrpc.NewClient(lis.Addr().String(), ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	e.Register(Executor{ID: "tax-1", Type: "tax", CommunicationType: "GRPC", Endpoint: pushLis.Addr().String(), MaxConcurrent: 4})
	return e, gamelanv1.NewExecutorServiceClient(conn), push
}

// pushedMetadata waits for the next push and returns its metadata.
func (p *pushRecorder) pushedMetadata(t *testing.T) metadata.MD {
	t.Helper()
	select {
	case <-p.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no task was pushed")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[len(p.calls)-1]
}

// reportAlone answers task in a ReportResults call of its own, with md as
// the call's metadata, as an executor answers a pushed task.
func reportAlone(t *testing.T, client gamelanv1.ExecutorServiceClient, task Task, md metadata.MD) {
	t.Helper()
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 10*time.Second)
	defer cancel()
	stream, err := client.ReportResults(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&gamelanv1.TaskResult{TaskId: task.ID, RunId: task.RunID, NodeId: task.NodeID, Attempt: int32(task.Attempt),
		ExecutionToken: task.ExecutionToken, Status: gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, CompletedAt: timestamppb.Now()}))
	_, err = stream.CloseAndRecv()
	require.NoError(t, err)
}

// TestDispatchSpanSpansTheTaskUntilItsResult: with a tracer provider, the
// engine starts a "dispatch tax" producer span when it pushes a task, the
// push carries that span's traceparent, and the span ends when the result
// arrives, linked to the executor's span the result carried back.
func TestDispatchSpanSpansTheTaskUntilItsResult(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	e, client, push := startTracedGRPC(t, Config{TracerProvider: provider})

	task := submit(t, e, TaskSpec{ExecutorType: "tax", Context: map[string]any{"amount": 1.0}})
	md := push.pushedMetadata(t)
	require.Len(t, spans.Started(), 1, "one dispatch span per task")
	started := spans.Started()[0]
	assert.Equal(t, "dispatch tax", started.Name())
	assert.Equal(t, trace.SpanKindProducer, started.SpanKind())
	sc := started.SpanContext()
	require.Len(t, md.Get("traceparent"), 1, "the push carries the dispatch span's context")
	assert.Equal(t, "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01", md.Get("traceparent")[0])
	assert.Empty(t, spans.Ended(), "the span lasts until the result arrives")

	// The executor answers with its own span of the task: same trace, its
	// own span id.
	executorSpan := "00f067aa0ba902b7"
	reportAlone(t, client, task, metadata.Pairs("traceparent", "00-"+sc.TraceID().String()+"-"+executorSpan+"-01"))
	waitFor(t, e, "the result", func() bool { got, _ := e.Task(task.ID); return got.Final() })

	require.Len(t, spans.Ended(), 1)
	ended := spans.Ended()[0]
	assert.Equal(t, sc.SpanID(), ended.SpanContext().SpanID())
	require.Len(t, ended.Links(), 1, "the executor's span is linked")
	assert.Equal(t, executorSpan, ended.Links()[0].SpanContext.SpanID().String())
	assert.Contains(t, ended.Attributes(), attribute.String("gamelan.executor.span_id", executorSpan))
	assert.Contains(t, ended.Attributes(), attribute.String("gamelan.status", "COMPLETED"))
}

// TestStreamedTaskCarriesItsTraceInReservedKeys: on a StreamTasks stream,
// the dispatch span's context travels in the task's context under the
// reserved keys, and a result bringing it back in its output's reserved
// keys ends the span; the keys are not kept in the recorded output.
func TestStreamedTaskCarriesItsTraceInReservedKeys(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	e, client, _ := startTracedGRPC(t, Config{TracerProvider: provider})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.StreamTasks(ctx, &gamelanv1.StreamTasksRequest{ExecutorId: "tax-1", MaxConcurrent: 4})
	require.NoError(t, err)
	waitStreams(t, e.deliverers["GRPC"].(*GRPC), "tax-1", 1)
	task := submit(t, e, TaskSpec{ExecutorType: "tax"})
	sent, err := stream.Recv()
	require.NoError(t, err)
	traceParent := sent.GetContext().GetFields()["__traceparent__"].GetStringValue()
	require.NotEmpty(t, traceParent, "the task's context carries the reserved key")
	sc := spans.Started()[0].SpanContext()
	assert.Equal(t, sc.TraceID().String(), strings.Split(traceParent, "-")[1])

	result := &gamelanv1.TaskResult{TaskId: task.ID, RunId: task.RunID, NodeId: task.NodeID, Attempt: int32(task.Attempt),
		ExecutionToken: task.ExecutionToken, Status: gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, CompletedAt: timestamppb.Now()}
	// The executor's output: the handler's own field, and the trace context
	// back under the reserved key (here the echo of the engine's).
	result.Output = &structpb.Struct{Fields: map[string]*structpb.Value{
		"ok":              structpb.NewBoolValue(true),
		"__traceparent__": structpb.NewStringValue(traceParent),
	}}
	report, err := client.ReportResults(ctx)
	require.NoError(t, err)
	require.NoError(t, report.Send(result))
	_, err = report.CloseAndRecv()
	require.NoError(t, err)
	waitFor(t, e, "the result", func() bool { got, _ := e.Task(task.ID); return got.Final() })

	require.Len(t, spans.Ended(), 1)
	require.Len(t, spans.Ended()[0].Links(), 1, "the result's trace context, from its output, is linked")
	got, _ := e.Task(task.ID)
	assert.NotContains(t, got.Result.Output, "__traceparent__")
	assert.Contains(t, got.Result.Output, "ok")
}

// TestTracingOffAddsNothing: without a tracer provider the engine sends
// no trace context.
func TestTracingOffAddsNothing(t *testing.T) {
	e, _, push := startTracedGRPC(t, Config{})
	submit(t, e, TaskSpec{ExecutorType: "tax"})
	md := push.pushedMetadata(t)
	assert.Empty(t, md.Get("traceparent"))
	assert.Empty(t, md.Get("tracestate"))
	assert.Empty(t, md.Get("baggage"))
}
