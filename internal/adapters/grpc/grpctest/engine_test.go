package grpctest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

const waitFor, tick = 10 * time.Second, 5 * time.Millisecond

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// client dials addr in plaintext unless opts say otherwise.
func client(t *testing.T, addr string, opts ...grpc.DialOption) gamelanv1.ExecutorServiceClient {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return gamelanv1.NewExecutorServiceClient(conn)
}

func register(t *testing.T, c gamelanv1.ExecutorServiceClient, id string, maxConcurrent int32) {
	t.Helper()
	_, err := c.RegisterExecutor(testContext(t), &gamelanv1.RegisterExecutorRequest{
		ExecutorId:         id,
		ExecutorType:       "payment",
		CommunicationType:  gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC,
		MaxConcurrentTasks: maxConcurrent,
	})
	require.NoError(t, err)
}

func task(taskID, runID string) *gamelanv1.ExecutionTask {
	return &gamelanv1.ExecutionTask{TaskId: taskID, RunId: runID, NodeId: "node-a", Attempt: 1, ExecutionToken: "token-" + taskID}
}

func resultFor(task *gamelanv1.ExecutionTask, st gamelanv1.TaskStatus) *gamelanv1.TaskResult {
	return &gamelanv1.TaskResult{
		TaskId: task.GetTaskId(), RunId: task.GetRunId(), NodeId: task.GetNodeId(), Attempt: task.GetAttempt(),
		ExecutionToken: task.GetExecutionToken(), Status: st, CompletedAt: timestamppb.Now(),
	}
}

// report sends results in one ReportResults call and returns its outcome.
func report(t *testing.T, c gamelanv1.ExecutorServiceClient, results ...*gamelanv1.TaskResult) error {
	t.Helper()
	stream, err := c.ReportResults(testContext(t))
	require.NoError(t, err)
	for _, r := range results {
		require.NoError(t, stream.Send(r))
	}
	_, err = stream.CloseAndRecv()
	return err
}

func requireCode(t *testing.T, want codes.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, want, status.Code(err), "error: %v", err)
}

func TestRegistryAndHeartbeats(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	ctx := testContext(t)

	req := &gamelanv1.RegisterExecutorRequest{
		ExecutorId: "exec-1", ExecutorType: "payment", Endpoint: "127.0.0.1:9090",
		Metadata: map[string]string{"name": "payments"}, SupportedNodeTypes: []string{"charge"}, MaxConcurrentTasks: 4,
	}
	answer, err := c.RegisterExecutor(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, "exec-1", answer.GetExecutorId())
	assert.Equal(t, grpctest.RegisteredStatus, answer.GetStatus())
	assert.NotNil(t, answer.GetRegisteredAt())
	reg, ok := engine.Registration("exec-1")
	require.True(t, ok)
	assert.True(t, proto.Equal(req, reg))
	_, err = c.RegisterExecutor(ctx, req)
	require.NoError(t, err, "registration is idempotent")
	assert.Equal(t, 2, engine.RegisterCalls("exec-1"))
	require.Len(t, engine.Registrations(), 1)

	_, err = c.Heartbeat(ctx, &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1", CurrentTaskCount: 2})
	require.NoError(t, err)
	require.Len(t, engine.Heartbeats("exec-1"), 1)
	assert.EqualValues(t, 2, engine.Heartbeats("exec-1")[0].GetCurrentTaskCount())

	_, err = c.Heartbeat(ctx, &gamelanv1.HeartbeatRequest{ExecutorId: "stranger"})
	requireCode(t, codes.NotFound, err)

	engine.Forget("exec-1")
	_, err = c.Heartbeat(ctx, &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"})
	requireCode(t, codes.NotFound, err)
	register(t, c, "exec-1", 4)
	_, err = c.Heartbeat(ctx, &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"})
	require.NoError(t, err)

	_, err = c.UnregisterExecutor(ctx, &gamelanv1.UnregisterExecutorRequest{ExecutorId: "exec-1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"exec-1"}, engine.Unregistered())
	_, ok = engine.Registration("exec-1")
	assert.False(t, ok)
	_, err = c.Heartbeat(ctx, &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"})
	requireCode(t, codes.NotFound, err)

	_, err = c.RegisterExecutor(ctx, &gamelanv1.RegisterExecutorRequest{})
	requireCode(t, codes.InvalidArgument, err)
}

func TestEmptyRegistrationStatus(t *testing.T) {
	engine := grpctest.NewEngine(grpctest.WithEmptyRegistrationStatus())
	c := client(t, engine.Start(t))
	answer, err := c.RegisterExecutor(testContext(t), &gamelanv1.RegisterExecutorRequest{ExecutorId: "exec-1"})
	require.NoError(t, err)
	assert.Empty(t, answer.GetStatus())
	assert.Equal(t, "exec-1", answer.GetExecutorId())
}

func TestStreamTasksKeepsMaxConcurrentOutstanding(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	t1, t2, t3 := task("t1", "run-1"), task("t2", "run-2"), task("t3", "run-3")
	engine.Enqueue("exec-1", t1, t2, t3)

	stream, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 2})
	require.NoError(t, err)
	got1, err := stream.Recv()
	require.NoError(t, err)
	got2, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t1, got1))
	assert.True(t, proto.Equal(t2, got2))
	assert.Equal(t, 1, engine.Queued("exec-1"), "two outstanding: the third waits")
	assert.Equal(t, 1, engine.StreamCalls("exec-1"))

	// A result releases one slot, and only one.
	require.NoError(t, report(t, c, resultFor(t1, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED)))
	got3, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t3, got3))
	assert.Zero(t, engine.Queued("exec-1"))

	// The stream stays open while it waits for tasks.
	t4 := task("t4", "run-4")
	engine.Enqueue("exec-1", t4)
	require.NoError(t, report(t, c, resultFor(t2, gamelanv1.TaskStatus_TASK_STATUS_FAILED)))
	got4, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t4, got4))
}

func TestStreamTasksSendsNothingWithoutCapacity(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	engine.Enqueue("exec-1", task("t1", "run-1"))

	ctx, cancel := context.WithCancel(testContext(t))
	stream, err := c.StreamTasks(ctx, &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 0})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return engine.OpenStreams("exec-1") == 1 }, waitFor, tick)
	cancel()
	_, err = stream.Recv()
	requireCode(t, codes.Canceled, err)
	require.Eventually(t, func() bool { return engine.OpenStreams("exec-1") == 0 }, waitFor, tick)
	assert.Equal(t, 1, engine.Queued("exec-1"), "the task was never taken")
}

func TestStreamTasksOutstandingEndsWithTheStream(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	t1, t2 := task("t1", "run-1"), task("t2", "run-2")
	engine.Enqueue("exec-1", t1, t2)

	ctx, cancel := context.WithCancel(testContext(t))
	first, err := c.StreamTasks(ctx, &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	got, err := first.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t1, got))
	cancel()
	require.Eventually(t, func() bool { return engine.OpenStreams("exec-1") == 0 }, waitFor, tick)

	second, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	got, err = second.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t2, got), "t1 stopped counting when its stream ended, and is not resent")
}

func TestStreamTasksCompletesImmediately(t *testing.T) {
	engine := grpctest.NewEngine(grpctest.WithStreamTasksCompletesImmediately())
	c := client(t, engine.Start(t))
	engine.Enqueue("exec-1", task("t1", "run-1"))
	for range 2 {
		stream, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 5})
		require.NoError(t, err)
		_, err = stream.Recv()
		require.ErrorIs(t, err, io.EOF)
	}
	assert.Equal(t, 2, engine.StreamCalls("exec-1"))
	assert.Equal(t, 1, engine.Queued("exec-1"))
}

func TestReportResultsAcknowledgesAndDeduplicates(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	r1 := resultFor(task("t1", "run-1"), gamelanv1.TaskStatus_TASK_STATUS_COMPLETED)
	r2 := resultFor(task("t2", "run-2"), gamelanv1.TaskStatus_TASK_STATUS_FAILED)

	waitCtx := testContext(t)
	waited := make(chan error, 1)
	go func() { waited <- engine.WaitForResults(waitCtx, 2) }()

	engine.FailReportResults(1)
	requireCode(t, codes.Unavailable, report(t, c, r1, r2))
	assert.Empty(t, engine.Results(), "a failed batch is not recorded")

	require.NoError(t, report(t, c, r1, r2))
	require.NoError(t, <-waited)
	require.NoError(t, report(t, c, r1, r2), "a resent batch is acknowledged again")

	assert.Len(t, engine.Results(), 4)
	assert.Equal(t, 2, engine.DuplicateResults())
	unique := engine.UniqueResults()
	require.Len(t, unique, 2)
	assert.True(t, proto.Equal(r1, unique["run-1:node-a:1"]))
	assert.True(t, proto.Equal(r2, unique["run-2:node-a:1"]))

	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err := engine.WaitForResults(short, 3)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "have 2")
}

func TestExecuteStream(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	register(t, c, "exec-1", 1)
	t1, t2 := task("t1", "run-1"), task("t2", "run-2")

	stream, err := c.ExecuteStream(testContext(t))
	require.NoError(t, err)
	require.NoError(t, stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{
		Heartbeat: &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"},
	}}))
	require.Eventually(t, func() bool { return engine.OpenStreams("exec-1") == 1 }, waitFor, tick)
	assert.Len(t, engine.Heartbeats("exec-1"), 1, "the identifying heartbeat is recorded")

	engine.Enqueue("exec-1", t1, t2)
	msg, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t1, msg.GetTask()))
	assert.Equal(t, 1, engine.Queued("exec-1"), "the registration allows one outstanding task")

	require.NoError(t, stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Ack{
		Ack: &gamelanv1.TaskAcknowledgement{TaskId: "t1", AcknowledgedAt: timestamppb.Now()},
	}}))
	require.Eventually(t, func() bool { return len(engine.Acks("exec-1")) == 1 }, waitFor, tick)
	assert.Equal(t, "t1", engine.Acks("exec-1")[0].GetTaskId())

	require.True(t, engine.Cancel("t1", "run cancelled"))
	msg, err = stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, "t1", msg.GetCancellation().GetTaskId())
	assert.Equal(t, "run cancelled", msg.GetCancellation().GetReason())
	require.True(t, engine.Cancel("run-1:node-a:1", "by key"))
	msg, err = stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, "run-1:node-a:1", msg.GetCancellation().GetTaskId())
	// A task still queued is cancelled right after it is sent, never before.
	require.True(t, engine.Cancel("t2", "still queued"))

	// A result on the stream is recorded and frees the slot.
	require.NoError(t, stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Result{
		Result: resultFor(t1, gamelanv1.TaskStatus_TASK_STATUS_CANCELLED),
	}}))
	msg, err = stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t2, msg.GetTask()))
	msg, err = stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, "t2", msg.GetCancellation().GetTaskId(), "the cancellation follows its task")
	assert.Equal(t, "still queued", msg.GetCancellation().GetReason())
	require.NoError(t, engine.WaitForResults(testContext(t), 1))
	assert.False(t, engine.Cancel("t1", "already finished"))

	// A result through ReportResults frees the slot too.
	t3 := task("t3", "run-3")
	engine.Enqueue("exec-1", t3)
	require.NoError(t, report(t, c, resultFor(t2, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED)))
	msg, err = stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t3, msg.GetTask()))

	// A heartbeat from a forgotten executor ends the stream with NotFound.
	engine.Forget("exec-1")
	require.NoError(t, stream.Send(&gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{
		Heartbeat: &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"},
	}}))
	_, err = stream.Recv()
	requireCode(t, codes.NotFound, err)
}

func TestExecuteStreamFirstMessage(t *testing.T) {
	engine := grpctest.NewEngine()
	c := client(t, engine.Start(t))
	for name, tc := range map[string]struct {
		first *gamelanv1.ExecutorMessage
		want  codes.Code
	}{
		"not a heartbeat": {
			first: &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Ack{Ack: &gamelanv1.TaskAcknowledgement{TaskId: "t1"}}},
			want:  codes.InvalidArgument,
		},
		"no executor id": {
			first: &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{Heartbeat: &gamelanv1.HeartbeatRequest{}}},
			want:  codes.InvalidArgument,
		},
		"unknown executor": {
			first: &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{Heartbeat: &gamelanv1.HeartbeatRequest{ExecutorId: "stranger"}}},
			want:  codes.NotFound,
		},
	} {
		t.Run(name, func(t *testing.T) {
			stream, err := c.ExecuteStream(testContext(t))
			require.NoError(t, err)
			require.NoError(t, stream.Send(tc.first))
			_, err = stream.Recv()
			requireCode(t, tc.want, err)
		})
	}
}

func TestStopAndStartAtTheSamePort(t *testing.T) {
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	// A short reconnect backoff, so that the client is back as soon as the
	// engine is.
	c := client(t, addr, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond},
	}))
	register(t, c, "exec-1", 1)
	stream, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return engine.OpenStreams("exec-1") == 1 }, waitFor, tick)

	engine.Stop()
	_, err = stream.Recv()
	requireCode(t, codes.Unavailable, err)
	assert.Zero(t, engine.OpenStreams("exec-1"))
	_, err = c.Heartbeat(testContext(t), &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"})
	requireCode(t, codes.Unavailable, err)
	engine.Stop() // idempotent

	require.Equal(t, addr, engine.StartAt(t, engine.Addr()))
	_, err = c.Heartbeat(testContext(t), &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"}, grpc.WaitForReady(true))
	require.NoError(t, err, "the same client reconnects, and the registration survived")
	t1 := task("t1", "run-1")
	engine.Enqueue("exec-1", t1)
	stream, err = c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	got, err := stream.Recv()
	require.NoError(t, err)
	assert.True(t, proto.Equal(t1, got))
}

func TestStopRightAfterStartFreesThePort(t *testing.T) {
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	for range 3 {
		engine.Stop()
		require.Equal(t, addr, engine.StartAt(t, addr))
	}
	register(t, client(t, addr), "exec-1", 1)
}

// bearer is per-RPC credentials that work over plaintext, for tests.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func TestAuth(t *testing.T) {
	var intercepted atomic.Int32
	engine := grpctest.NewEngine(
		grpctest.WithAuth(func(ctx context.Context) error {
			if token, ok := grpctest.BearerToken(ctx); !ok || token != "good" {
				return errors.New("bad token")
			}
			return nil
		}),
		grpctest.WithServerOptions(grpc.UnaryInterceptor(
			func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				intercepted.Add(1)
				return handler(ctx, req)
			})),
	)
	addr := engine.Start(t)
	anonymous := client(t, addr)
	_, err := anonymous.RegisterExecutor(testContext(t), &gamelanv1.RegisterExecutorRequest{ExecutorId: "exec-1"})
	requireCode(t, codes.Unauthenticated, err)
	stream, err := anonymous.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireCode(t, codes.Unauthenticated, err)
	assert.Equal(t, 2, engine.Refused())
	assert.Zero(t, engine.StreamCalls("exec-1"), "a refused call does not reach its handler")
	_, ok := engine.Registration("exec-1")
	assert.False(t, ok)

	authenticated := client(t, addr, grpc.WithPerRPCCredentials(bearer("good")))
	register(t, authenticated, "exec-1", 1)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "authorization", "Bearer good")
	_, err = anonymous.Heartbeat(ctx, &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"})
	require.NoError(t, err)
	assert.Equal(t, 2, engine.Refused())
	assert.EqualValues(t, 3, intercepted.Load(), "server options apply alongside WithAuth")
}

// executorServer is a push endpoint that records what it receives.
type executorServer struct {
	dispatcherpb.UnimplementedExecutorServer

	mu       sync.Mutex
	requests []*dispatcherpb.ExecutionRequest
	tokens   []string
}

func (s *executorServer) Execute(ctx context.Context, req *dispatcherpb.ExecutionRequest) (*dispatcherpb.ExecutionAck, error) {
	token, _ := grpctest.BearerToken(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	s.tokens = append(s.tokens, token)
	return &dispatcherpb.ExecutionAck{Accepted: true, Code: 202, Message: "accepted"}, nil
}

func serveExecutor(t *testing.T, opts ...grpc.ServerOption) (*executorServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := grpc.NewServer(opts...)
	executor := &executorServer{}
	dispatcherpb.RegisterExecutorServer(server, executor)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = server.Serve(lis)
	}()
	t.Cleanup(func() {
		server.Stop()
		<-served
	})
	return executor, lis.Addr().String()
}

func TestPush(t *testing.T) {
	executor, addr := serveExecutor(t)
	engine := grpctest.NewEngine()
	t.Cleanup(engine.Close)
	req := &dispatcherpb.ExecutionRequest{
		RunId: "run-1", NodeId: "charge", Attempt: 1, Token: "tok",
		Variables: map[string]string{"amount": "10"}, IdempotencyKey: "run-1:charge:1",
		Signature: grpctest.Signature("run-1", "exec-1"),
	}
	for _, token := range []string{"first", "second"} {
		ack, err := engine.Push(testContext(t), addr, req, grpc.PerRPCCredentials(bearer(token)))
		require.NoError(t, err)
		assert.True(t, ack.GetAccepted())
		assert.EqualValues(t, 202, ack.GetCode())
	}
	executor.mu.Lock()
	defer executor.mu.Unlock()
	require.Len(t, executor.requests, 2)
	assert.True(t, proto.Equal(req, executor.requests[0]))
	assert.Equal(t, []string{"first", "second"}, executor.tokens)

	decoded, err := base64.StdEncoding.DecodeString(req.GetSignature())
	require.NoError(t, err)
	assert.Equal(t, "run-1exec-1", string(decoded))
}

func TestTLSBothWays(t *testing.T) {
	serverCreds, clientCreds := selfSignedTLS(t)

	engine := grpctest.NewEngine(
		grpctest.WithServerOptions(grpc.Creds(serverCreds)),
		grpctest.WithPushDialOptions(grpc.WithTransportCredentials(clientCreds)),
	)
	addr := engine.Start(t)
	register(t, client(t, addr, grpc.WithTransportCredentials(clientCreds)), "exec-1", 1)
	_, err := client(t, addr).RegisterExecutor(testContext(t), &gamelanv1.RegisterExecutorRequest{ExecutorId: "exec-2"})
	requireCode(t, codes.Unavailable, err)

	executor, executorAddr := serveExecutor(t, grpc.Creds(serverCreds))
	ack, err := engine.Push(testContext(t), executorAddr, &dispatcherpb.ExecutionRequest{RunId: "run-1", NodeId: "charge"})
	require.NoError(t, err)
	assert.True(t, ack.GetAccepted())
	executor.mu.Lock()
	defer executor.mu.Unlock()
	assert.Len(t, executor.requests, 1)
}

// selfSignedTLS returns server credentials for 127.0.0.1 and client
// credentials that trust them.
func selfSignedTLS(t *testing.T) (server, client credentials.TransportCredentials) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "grpctest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS12,
	})
	client = credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	return server, client
}
