package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/executors/examples"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/pkg/executor"
)

// The raw baselines of the gRPC scenarios: each is the least an executor
// can do on its transport, with the same messages as the executor service
// and the same calculate-tax handler, and none of the runtime (no pool, no
// queue, no deduplication, no outbox): every task gets a goroutine of its
// own, and every result a ReportResults stream of its own. The ratio of the
// service's figures to theirs is the runtime's cost.
func init() {
	roles["raw-push"] = rawPush
	roles["raw-stream"] = rawStream
	roles["raw-bidi"] = rawBidi
}

// rawExecutor is what the three raw baselines share: the connection to the
// engine and the results being reported.
type rawExecutor struct {
	id      string
	conn    *grpc.ClientConn
	engine  gamelanv1.ExecutorServiceClient
	reports sync.WaitGroup
}

// dialRaw reads a raw role's arguments (-engine ADDR -id EXECUTOR_ID) and
// connects to the engine.
func dialRaw(args []string) (*rawExecutor, error) {
	flags := flag.NewFlagSet("raw", flag.ContinueOnError)
	engine := flags.String("engine", "", "the engine's gRPC address")
	id := flags.String("id", "raw-calculate-tax-bench", "executor id")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	if *engine == "" {
		return nil, errors.New("-engine is required")
	}
	conn, err := grpc.NewClient(*engine, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &rawExecutor{id: *id, conn: conn, engine: gamelanv1.NewExecutorServiceClient(conn)}, nil
}

// close waits for the results being reported, then closes the connection.
func (x *rawExecutor) close() {
	x.reports.Wait()
	x.conn.Close()
}

// register registers the executor with the engine, as the service does
// before any intake opens; endpoint is its push address, if it has one.
func (x *rawExecutor) register(ctx context.Context, endpoint string) error {
	_, err := x.engine.RegisterExecutor(ctx, &gamelanv1.RegisterExecutorRequest{
		ExecutorId: x.id, ExecutorType: "calculate-tax", CommunicationType: gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC,
		Endpoint: endpoint, SupportedNodeTypes: []string{"calculate-tax"}, MaxConcurrentTasks: 10,
	})
	return err
}

// ready tells the harness the role is up by printing line, its first line
// on stdout. From then on, SIGUSR1 makes it print "mallocs N": the heap
// allocations it made so far (runtime.MemStats.Mallocs, what the service
// exports as go_memstats_mallocs_total), the baseline of the allocations
// per task.
func (x *rawExecutor) ready(ctx context.Context, stdout io.Writer, line string) {
	asked := make(chan os.Signal, 1)
	signal.Notify(asked, syscall.SIGUSR1)
	go func() {
		defer signal.Stop(asked)
		for {
			select {
			case <-asked:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				fmt.Fprintf(stdout, "mallocs %d\n", m.Mallocs)
			case <-ctx.Done():
				return
			}
		}
	}()
	fmt.Fprintln(stdout, line)
}

// handle computes a task's result and reports it, on a goroutine of its
// own so that the intake goes on reading.
func (x *rawExecutor) handle(id taskIdentity, vars map[string]any) {
	x.reports.Go(func() { x.report(taxResult(id, vars)) })
}

// report sends one result on a ReportResults stream of its own and waits
// for the engine's Empty. A failure is only logged: the harness counts the
// task as lost.
func (x *rawExecutor) report(result *gamelanv1.TaskResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := x.engine.ReportResults(ctx)
	if err == nil {
		err = stream.Send(result)
	}
	if err == nil {
		_, err = stream.CloseAndRecv()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: report %s: %v\n", x.id, result.GetNodeId(), err)
	}
}

// taskIdentity is what a result repeats of its task.
type taskIdentity struct {
	taskID, runID, nodeID, token string
	attempt                      int32
}

// taxResult runs the calculate-tax handler the service hosts on vars and
// returns the TaskResult the service would send for it: the same fields,
// the same output Struct ({amount, tax}), hence the same size.
func taxResult(id taskIdentity, vars map[string]any) *gamelanv1.TaskResult {
	result := &gamelanv1.TaskResult{
		TaskId: id.taskID, RunId: id.runID, NodeId: id.nodeID, Attempt: id.attempt,
		ExecutionToken: id.token, CompletedAt: timestamppb.Now(),
	}
	res, err := examples.CalculateTax{}.Execute(context.Background(), &executor.Task{RunID: id.runID, NodeID: id.nodeID, Context: vars})
	if err == nil && res.Status == executor.StatusCompleted {
		result.Output, err = structpb.NewStruct(res.Output)
	}
	if err != nil || res.Status != executor.StatusCompleted {
		result.Status = gamelanv1.TaskStatus_TASK_STATUS_FAILED
		return result
	}
	result.Status = gamelanv1.TaskStatus_TASK_STATUS_COMPLETED
	return result
}

// rawPush serves Execute on a free loopback port: it acknowledges each
// push at once and reports its result afterwards, as the service does. It
// registers its address with the engine and prints it.
func rawPush(ctx context.Context, args []string, stdout io.Writer) error {
	x, err := dialRaw(args)
	if err != nil {
		return err
	}
	defer x.close()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	dispatcherpb.RegisterExecutorServer(server, &rawPushServer{x: x})
	go func() { _ = server.Serve(listener) }()
	// GracefulStop waits for the Execute calls in progress, so that none
	// starts a report after close began waiting for them.
	defer server.GracefulStop()
	if err := x.register(ctx, listener.Addr().String()); err != nil {
		return err
	}
	x.ready(ctx, stdout, listener.Addr().String())
	<-ctx.Done()
	return nil
}

type rawPushServer struct {
	dispatcherpb.UnimplementedExecutorServer
	x *rawExecutor
}

// Execute acknowledges the push and runs the task afterwards.
func (s *rawPushServer) Execute(_ context.Context, req *dispatcherpb.ExecutionRequest) (*dispatcherpb.ExecutionAck, error) {
	// A push has no task id: the result names it by runId:nodeId:attempt,
	// as the service's does.
	key := req.GetRunId() + ":" + req.GetNodeId() + ":" + strconv.Itoa(int(req.GetAttempt()))
	vars := make(map[string]any, len(req.GetVariables()))
	for k, v := range req.GetVariables() {
		vars[k] = v
	}
	s.x.handle(taskIdentity{taskID: key, runID: req.GetRunId(), nodeID: req.GetNodeId(), token: req.GetToken(), attempt: req.GetAttempt()}, vars)
	return &dispatcherpb.ExecutionAck{Accepted: true, Code: 200}, nil
}

// rawStream reads tasks from one StreamTasks call and reports each result.
func rawStream(ctx context.Context, args []string, stdout io.Writer) error {
	x, err := dialRaw(args)
	if err != nil {
		return err
	}
	defer x.close()
	if err := x.register(ctx, ""); err != nil {
		return err
	}
	// No limit: the raw executor takes whatever the engine sends.
	stream, err := x.engine.StreamTasks(ctx, &gamelanv1.StreamTasksRequest{ExecutorId: x.id, MaxConcurrent: 1 << 30})
	if err != nil {
		return err
	}
	x.ready(ctx, stdout, "ready")
	for {
		task, err := stream.Recv()
		if err != nil {
			return endOfStream(ctx, err)
		}
		x.handle(identityOf(task), task.GetContext().AsMap())
	}
}

// rawBidi reads tasks from one ExecuteStream call, acknowledges each on the
// stream (as the service does once its runtime took the task) and reports
// each result through ReportResults, as the service does: results are
// never written on the stream (docs/protocol.md, 2.5).
func rawBidi(ctx context.Context, args []string, stdout io.Writer) error {
	x, err := dialRaw(args)
	if err != nil {
		return err
	}
	defer x.close()
	if err := x.register(ctx, ""); err != nil {
		return err
	}
	stream, err := x.engine.ExecuteStream(ctx)
	if err != nil {
		return err
	}
	hello := &gamelanv1.HeartbeatRequest{ExecutorId: x.id, Health: &gamelanv1.ExecutorHealth{Status: "HEALTHY"}}
	if err := stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{Heartbeat: hello}}); err != nil {
		return err
	}
	x.ready(ctx, stdout, "ready")
	for {
		msg, err := stream.Recv()
		if err != nil {
			return endOfStream(ctx, err)
		}
		task := msg.GetTask()
		if task == nil {
			continue // cancellations and configuration updates: none come
		}
		ack := &gamelanv1.TaskAcknowledgement{TaskId: task.GetTaskId(), AcknowledgedAt: timestamppb.Now()}
		if err := stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Ack{Ack: ack}}); err != nil {
			return endOfStream(ctx, err)
		}
		x.handle(identityOf(task), task.GetContext().AsMap())
	}
}

func identityOf(task *gamelanv1.ExecutionTask) taskIdentity {
	return taskIdentity{taskID: task.GetTaskId(), runID: task.GetRunId(), nodeID: task.GetNodeId(), token: task.GetExecutionToken(), attempt: task.GetAttempt()}
}

// endOfStream is nil when the stream ended because the role was told to
// stop, else the error: a raw baseline does not reconnect, and the harness
// would see its tasks unanswered.
func endOfStream(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("task stream: %w", err)
}
