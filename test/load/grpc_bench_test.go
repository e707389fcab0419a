// Package load holds the benchmarks that measure the executor service end
// to end over real transports on loopback, each next to a baseline measured
// in the same run. Run them with `make bench`.
package load

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

const executorID = "executor-calculate-tax-bench"

// pushers is how many concurrent engine-side callers push tasks.
const pushers = 64

// BenchmarkGRPCPush measures tasks/s from the engine's Execute call to the
// acknowledged result, through the real service (push server, runtime,
// calculate-tax, ReportResults).
func BenchmarkGRPCPush(b *testing.B) {
	engine, endpoint := startService(b, "push")
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range pushers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				req := &dispatcherpb.ExecutionRequest{
					RunId: "bench", NodeId: "n" + strconv.FormatInt(i, 10), Attempt: 1,
					Variables: map[string]string{"amount": "125.50"},
					Signature: grpctest.Signature("bench", executorID),
				}
				for {
					ack, err := engine.Push(ctx, endpoint, req)
					if err != nil {
						b.Error(err)
						return
					}
					if ack.GetAccepted() {
						break
					}
					if ack.GetCode() != 503 {
						b.Errorf("push refused: %v", ack)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	waitResults(b, engine)
}

// BenchmarkGRPCStream measures tasks/s from tasks queued on the engine to
// acknowledged results, through StreamTasks and the real service.
func BenchmarkGRPCStream(b *testing.B) {
	engine, _ := startService(b, "stream")
	tasks := make([]*gamelanv1.ExecutionTask, b.N)
	for i := range tasks {
		tasks[i] = benchTask(i)
	}
	b.ResetTimer()
	engine.Enqueue(executorID, tasks...)
	waitResults(b, engine)
}

// BenchmarkRawGRPCStream is the baseline: a bare grpc-go bidi stream
// carrying the same messages (an ExecutionTask in, a TaskResult out) with
// no executor at all: the transport's own cost per task.
func BenchmarkRawGRPCStream(b *testing.B) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	server := ggrpc.NewServer()
	gamelanv1.RegisterExecutorServiceServer(server, &echoEngine{n: b.N})
	go func() { _ = server.Serve(listener) }()
	b.Cleanup(server.Stop)
	conn, err := ggrpc.NewClient(listener.Addr().String(), ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	stream, err := gamelanv1.NewExecutorServiceClient(conn).ExecuteStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		task := msg.GetTask()
		out, _ := structpb.NewStruct(map[string]any{"amount": 125.5, "tax": 12.55})
		if err := stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Result{Result: &gamelanv1.TaskResult{
			TaskId: task.GetTaskId(), RunId: task.GetRunId(), NodeId: task.GetNodeId(), Attempt: task.GetAttempt(),
			ExecutionToken: task.GetExecutionToken(), Status: gamelanv1.TaskStatus_TASK_STATUS_COMPLETED,
			Output: out, CompletedAt: timestamppb.Now(),
		}}}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkRawGRPCUnary is the push path's baseline: the same
// ExecutionRequest sent as a bare unary call, by as many concurrent callers,
// to a server that only acknowledges it.
func BenchmarkRawGRPCUnary(b *testing.B) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	server := ggrpc.NewServer()
	dispatcherpb.RegisterExecutorServer(server, ackServer{})
	go func() { _ = server.Serve(listener) }()
	b.Cleanup(server.Stop)
	conn, err := ggrpc.NewClient(listener.Addr().String(), ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	client := dispatcherpb.NewExecutorClient(conn)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range pushers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				req := &dispatcherpb.ExecutionRequest{
					RunId: "bench", NodeId: "n", Attempt: 1,
					Variables: map[string]string{"amount": "125.50"},
					Signature: grpctest.Signature("bench", executorID),
				}
				if _, err := client.Execute(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

type ackServer struct {
	dispatcherpb.UnimplementedExecutorServer
}

func (ackServer) Execute(context.Context, *dispatcherpb.ExecutionRequest) (*dispatcherpb.ExecutionAck, error) {
	return &dispatcherpb.ExecutionAck{Accepted: true, Code: 200}, nil
}

// echoEngine sends n tasks down ExecuteStream and ends the stream once n
// results came back.
type echoEngine struct {
	gamelanv1.UnimplementedExecutorServiceServer
	n int
}

func (e *echoEngine) ExecuteStream(stream gamelanv1.ExecutorService_ExecuteStreamServer) error {
	received := make(chan error, 1)
	go func() {
		for range e.n {
			if _, err := stream.Recv(); err != nil {
				received <- err
				return
			}
		}
		received <- nil
	}()
	for i := range e.n {
		if err := stream.Send(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{Task: benchTask(i)}}); err != nil {
			return err
		}
	}
	return <-received
}

func benchTask(i int) *gamelanv1.ExecutionTask {
	ctx, _ := structpb.NewStruct(map[string]any{"amount": 125.5})
	return &gamelanv1.ExecutionTask{
		TaskId: "t" + strconv.Itoa(i), RunId: "bench", NodeId: "n" + strconv.Itoa(i), NodeType: "calculate-tax",
		Attempt: 1, ExecutionToken: "token", Context: ctx, ScheduledAt: timestamppb.Now(),
	}
}

// startService runs the real executor service against a test engine and
// returns once it is ready.
func startService(b *testing.B, intake string) (*grpctest.Engine, string) {
	b.Helper()
	engine := grpctest.NewEngine()
	addr := engine.Start(b)
	vars := map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":          "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":          "0",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET": addr,
		"GAMELAN_EXECUTOR_GRPC_INTAKE":        intake,
		"GAMELAN_EXECUTOR_ENABLED_TYPES":      "calculate-tax",
		"GAMELAN_EXECUTOR_INSTANCE_ID":        "bench",
		"GAMELAN_EXECUTOR_LOG_LEVEL":          "error",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- service.RunHosting(ctx, nil, func(k string) string { return vars[k] }, io.Discard, io.Discard, examples.All(examples.Config{}))
	}()
	b.Cleanup(func() { cancel(); <-done })
	// Intake starts right after registration; poll the engine for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if reg, ok := engine.Registration(executorID); ok {
			return engine, reg.GetEndpoint()
		}
		select {
		case err := <-done:
			b.Fatalf("service stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatal("service never registered")
		}
	}
}

func waitResults(b *testing.B, engine *grpctest.Engine) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := engine.WaitForResults(ctx, b.N); err != nil {
		b.Fatalf("results: %v (have %d)", err, len(engine.UniqueResults()))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
