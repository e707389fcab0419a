package grpcengine_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// The features of the Server that the reference engine relies on and the
// grpctest harness does not exercise; the protocol's rules themselves are
// tested through grpctest (internal/adapters/grpc/grpctest).

const waitFor, tick = 10 * time.Second, 5 * time.Millisecond

// handler knows every executor, with room for limit tasks on an
// ExecuteStream, and records what closing streams leave unanswered.
type handler struct {
	limit int32

	mu         sync.Mutex
	unanswered map[string][]string // task ids by executor
	refuse     bool                // Results refuses every batch
}

func (h *handler) Register(*gamelanv1.RegisterExecutorRequest) error   { return nil }
func (h *handler) Unregister(string)                                   {}
func (h *handler) Heartbeat(*gamelanv1.HeartbeatRequest) error         { return nil }
func (h *handler) Acknowledged(string, *gamelanv1.TaskAcknowledgement) {}
func (h *handler) StreamRequested(*gamelanv1.StreamTasksRequest) error { return nil }
func (h *handler) MaxConcurrentTasks(string) int32                     { return h.limit }

func (h *handler) Results(string, []*gamelanv1.TaskResult) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuse {
		return status.Error(codes.Unavailable, "refused")
	}
	return nil
}

func (h *handler) StreamClosed(executorID string, unanswered []*gamelanv1.ExecutionTask) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unanswered == nil {
		h.unanswered = map[string][]string{}
	}
	for _, t := range unanswered {
		h.unanswered[executorID] = append(h.unanswered[executorID], t.GetTaskId())
	}
}

func (h *handler) closed(executorID string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unanswered[executorID]
}

func serve(t *testing.T, h grpcengine.Handler) (*grpcengine.Server, gamelanv1.ExecutorServiceClient) {
	t.Helper()
	s := grpcengine.New(h, grpcengine.Config{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, s.Start(lis))
	t.Cleanup(s.Close)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return s, gamelanv1.NewExecutorServiceClient(conn)
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func task(id string) *gamelanv1.ExecutionTask {
	return &gamelanv1.ExecutionTask{TaskId: id, RunId: "run-" + id, NodeId: "node", Attempt: 1}
}

func TestOfferQueuesOnlyWhileAStreamIsOpen(t *testing.T) {
	h := &handler{}
	s, c := serve(t, h)
	_, ok := s.Offer("exec-1", task("t0"))
	assert.False(t, ok, "offered without a stream")
	_, limited := s.Room("exec-1")
	assert.False(t, limited, "no stream, no limit of its own")

	ctx, closeStream := context.WithCancel(testContext(t))
	stream, err := c.StreamTasks(ctx, &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 2})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.OpenStreams("exec-1") == 1 }, waitFor, tick)
	assert.Equal(t, grpcengine.StreamTasksKind, s.StreamKind("exec-1"))
	room, limited := s.Room("exec-1")
	assert.True(t, limited)
	assert.Equal(t, 2, room)

	for _, id := range []string{"t1", "t2", "t3"} {
		kind, ok := s.Offer("exec-1", task(id))
		require.True(t, ok)
		assert.Equal(t, grpcengine.StreamTasksKind, kind)
	}
	for _, want := range []string{"t1", "t2"} {
		got, err := stream.Recv()
		require.NoError(t, err)
		assert.Equal(t, want, got.GetTaskId())
	}
	require.Eventually(t, func() bool { return s.Queued("exec-1") == 1 }, waitFor, tick)
	room, _ = s.Room("exec-1")
	assert.Equal(t, -1, room, "two outstanding and one queued on a stream of two")
	assert.False(t, s.Cancel("t3", "no"), "StreamTasks cannot carry a cancellation")

	closeStream()
	require.Eventually(t, func() bool { return len(h.closed("exec-1")) == 2 }, waitFor, tick)
	assert.ElementsMatch(t, []string{"t1", "t2"}, h.closed("exec-1"), "the unanswered tasks of the closed stream")
	assert.Equal(t, grpcengine.NoStream, s.StreamKind("exec-1"))
	unsent := s.Unqueue("exec-1")
	require.Len(t, unsent, 1)
	assert.Equal(t, "t3", unsent[0].GetTaskId())
	assert.Zero(t, s.Queued("exec-1"))
}

func TestARefusedResultStillFreesItsStreamSlot(t *testing.T) {
	h := &handler{refuse: true}
	s, c := serve(t, h)
	stream, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	s.Enqueue("exec-1", task("t1"), task("t2"))
	first, err := stream.Recv()
	require.NoError(t, err)

	report, err := c.ReportResults(testContext(t))
	require.NoError(t, err)
	require.NoError(t, report.Send(&gamelanv1.TaskResult{RunId: first.GetRunId(), NodeId: first.GetNodeId(), Attempt: 1,
		Status: gamelanv1.TaskStatus_TASK_STATUS_COMPLETED}))
	_, err = report.CloseAndRecv()
	assert.Equal(t, codes.Unavailable, status.Code(err), "the Handler's refusal fails the call")

	second, err := stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, "t2", second.GetTaskId(), "the executor no longer runs t1: its slot is free")
}

func TestShutdownEndsOpenStreams(t *testing.T) {
	s, c := serve(t, &handler{limit: 1})
	stream, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 1})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.OpenStreams("exec-1") == 1 }, waitFor, tick)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	stopped := make(chan struct{})
	go func() { s.Shutdown(ctx); close(stopped) }()
	_, err = stream.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("Shutdown waited for the stream the executor never ends")
	}
	assert.Zero(t, s.OpenStreams("exec-1"))
}
