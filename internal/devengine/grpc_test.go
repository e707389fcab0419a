package devengine

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// fakeExecuteStream is the server side of an ExecuteStream: Recv gives
// the executor's opening heartbeat, then blocks until the stream ends;
// Send waits for a go-ahead per message and records it.
type fakeExecuteStream struct {
	ggrpc.ServerStream
	ctx        context.Context
	executorID string
	opened     bool
	goAhead    chan struct{}

	mu   sync.Mutex
	sent []*gamelanv1.EngineMessage
}

func (s *fakeExecuteStream) Context() context.Context { return s.ctx }

func (s *fakeExecuteStream) Recv() (*gamelanv1.ExecutorMessage, error) {
	if !s.opened {
		s.opened = true
		return &gamelanv1.ExecutorMessage{Message: &gamelanv1.ExecutorMessage_Heartbeat{
			Heartbeat: &gamelanv1.HeartbeatRequest{ExecutorId: s.executorID}}}, nil
	}
	<-s.ctx.Done()
	return nil, io.EOF
}

func (s *fakeExecuteStream) Send(m *gamelanv1.EngineMessage) error {
	select {
	case <-s.goAhead:
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, m)
	return nil
}

func (s *fakeExecuteStream) messages() []*gamelanv1.EngineMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*gamelanv1.EngineMessage(nil), s.sent...)
}

// TestCancellationNeverOvertakesItsTask cancels a task that is still
// queued behind another on a slow ExecuteStream: the executor must get the
// task before its cancellation, or the cancellation finds nothing to
// cancel and the task runs anyway. The sender picks among ready messages,
// so the scenario is repeated to make a wrong order show.
func TestCancellationNeverOvertakesItsTask(t *testing.T) {
	for round := range 20 {
		e := New(Config{})
		g := NewGRPC(e, grpcengine.Config{}, slog.New(slog.DiscardHandler))
		e.SetDeliverer("GRPC", g)
		ctx, cancel := context.WithCancel(context.Background())
		engineDone := make(chan struct{})
		go func() { _ = e.Run(ctx); close(engineDone) }()
		e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})

		stream := &fakeExecuteStream{ctx: ctx, executorID: "a", goAhead: make(chan struct{}, 16)}
		streamDone := make(chan struct{})
		go func() { _ = g.Server().ExecuteStream(stream); close(streamDone) }()
		waitStreams(t, g, "a", 1)

		first, err := e.Submit(TaskSpec{ExecutorType: "tax"})
		require.NoError(t, err)
		second, err := e.Submit(TaskSpec{ExecutorType: "tax"})
		require.NoError(t, err)
		waitFor(t, e, "both delivered to the stream", func() bool {
			a, _ := e.Task(first.ID)
			b, _ := e.Task(second.ID)
			return a.Transport == "grpc-bidi" && b.Transport == "grpc-bidi"
		})
		cancelled, err := e.Cancel(second.ID, "test")
		require.NoError(t, err)
		require.True(t, cancelled)
		for range 3 {
			stream.goAhead <- struct{}{}
		}
		require.Eventually(t, func() bool { return len(stream.messages()) == 3 }, 5*time.Second, time.Millisecond)

		var order []string
		for _, m := range stream.messages() {
			if task := m.GetTask(); task != nil {
				order = append(order, "task "+task.GetTaskId())
			} else {
				order = append(order, "cancel "+m.GetCancellation().GetTaskId())
			}
		}
		require.ElementsMatch(t, []string{"task " + first.ID, "task " + second.ID, "cancel " + second.ID}, order, "round %d", round)
		require.Greater(t, slices.Index(order, "cancel "+second.ID), slices.Index(order, "task "+second.ID),
			"round %d: the cancellation came before its task: %v", round, order)
		cancel()
		<-streamDone
		<-engineDone
	}
}

// fakeTaskStream is the server side of a StreamTasks call: Send records
// what the engine wrote, and the executor goes away when ctx ends.
type fakeTaskStream struct {
	ggrpc.ServerStream
	ctx  context.Context
	sent chan *gamelanv1.ExecutionTask
}

func (s *fakeTaskStream) Context() context.Context { return s.ctx }

func (s *fakeTaskStream) Send(t *gamelanv1.ExecutionTask) error {
	select {
	case s.sent <- t:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *fakeTaskStream) next(t *testing.T) *gamelanv1.ExecutionTask {
	t.Helper()
	select {
	case task := <-s.sent:
		return task
	case <-time.After(5 * time.Second):
		t.Fatal("no task sent on the stream within 5s")
		return nil
	}
}

// openTaskStream opens a StreamTasks stream of an executor, waits until
// the engine holds it, and returns it with a func that closes it and waits
// for its handler to return.
func openTaskStream(t *testing.T, g *GRPC, executorID string, maxConcurrent int32) (*fakeTaskStream, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream := &fakeTaskStream{ctx: ctx, sent: make(chan *gamelanv1.ExecutionTask, 16)}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = g.Server().StreamTasks(&gamelanv1.StreamTasksRequest{ExecutorId: executorID, MaxConcurrent: maxConcurrent}, stream)
	}()
	closeStream := func() { cancel(); <-ended }
	t.Cleanup(closeStream)
	waitStreams(t, g, executorID, 1)
	return stream, closeStream
}

// waitStreams waits until the engine holds n open streams of an executor.
func waitStreams(t *testing.T, g *GRPC, executorID string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return g.Server().OpenStreams(executorID) == n },
		5*time.Second, time.Millisecond, "not %d open streams", n)
}

// fakeReport is the server side of a ReportResults call carrying results.
type fakeReport struct {
	ggrpc.ServerStream
	results []*gamelanv1.TaskResult
}

func (r *fakeReport) Context() context.Context { return context.Background() }

func (r *fakeReport) Recv() (*gamelanv1.TaskResult, error) {
	if len(r.results) == 0 {
		return nil, io.EOF
	}
	next := r.results[0]
	r.results = r.results[1:]
	return next, nil
}

func (r *fakeReport) SendAndClose(*emptypb.Empty) error { return nil }

// report answers a task through ReportResults, as an executor does.
func report(t *testing.T, g *GRPC, task Task, status gamelanv1.TaskStatus) {
	t.Helper()
	require.NoError(t, g.Server().ReportResults(&fakeReport{results: []*gamelanv1.TaskResult{{
		TaskId: task.ID, RunId: task.RunID, NodeId: task.NodeID, Attempt: int32(task.Attempt),
		ExecutionToken: task.ExecutionToken, Status: status, CompletedAt: timestamppb.Now(),
	}}}))
}

func startGRPCEngine(t *testing.T, cfg Config) (*Engine, *GRPC) {
	t.Helper()
	e := New(cfg)
	g := NewGRPC(e, grpcengine.Config{}, slog.New(slog.DiscardHandler))
	e.SetDeliverer("GRPC", g)
	runEngine(t, e)
	return e, g
}

// TestTaskSentOnAClosedStreamIsHandedOutAgainOnceOverdue: a task sent on a
// stream that then closed may never have been read (the executor reopens
// its stream for a fresh token, having stopped reading while full), or may
// be running: it is handed out again once its result is overdue.
func TestTaskSentOnAClosedStreamIsHandedOutAgainOnceOverdue(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	e, g := startGRPCEngine(t, Config{Now: clock.Now, ResultGrace: 10 * time.Second})
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 2})

	first, closeFirst := openTaskStream(t, g, "a", 2)
	lost := submit(t, e, TaskSpec{ExecutorType: "tax", TimeoutSeconds: 1})
	answered := submit(t, e, TaskSpec{ExecutorType: "tax", TimeoutSeconds: 1})
	assert.ElementsMatch(t, []string{lost.ID, answered.ID}, []string{first.next(t).GetTaskId(), first.next(t).GetTaskId()})
	closeFirst()
	require.True(t, answer(e, answered.ID, domain.StatusCompleted), "answered after its stream closed")

	second, _ := openTaskStream(t, g, "a", 2)
	e.requeueOverdue()
	got, _ := e.Task(lost.ID)
	require.Equal(t, StateAssigned, got.State, "handed out again before its result was overdue")

	clock.advance(time.Second + 10*time.Second) // its timeout and the grace
	e.requeueOverdue()
	assert.Equal(t, lost.ID, second.next(t).GetTaskId())
	got, _ = e.Task(lost.ID)
	assert.Equal(t, 2, got.Deliveries)
	ex, _ := e.Executor("a")
	assert.Equal(t, 1, ex.Assigned)
}

// TestStreamTasksHonoursMaxConcurrent: a stream opened with max_concurrent
// 1 has at most one unanswered task, whatever the registration allows, and
// the engine gives the executor no more than its stream can take.
func TestStreamTasksHonoursMaxConcurrent(t *testing.T) {
	e, g := startGRPCEngine(t, Config{})
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 5})
	stream, _ := openTaskStream(t, g, "a", 1)
	for range 3 {
		submit(t, e, TaskSpec{ExecutorType: "tax"})
	}

	first, _ := e.Task(stream.next(t).GetTaskId())
	e.dispatch(t.Context())
	ex, _ := e.Executor("a")
	assert.Equal(t, 1, ex.Assigned, "more than max_concurrent tasks given to the stream")

	report(t, g, first, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED)
	assert.NotEqual(t, first.ID, stream.next(t).GetTaskId(), "an answer makes room for the next")
}

// TestClosedStreamTakesNothingMore: a task the last stream of an executor
// never sent goes back to the engine's queue when the stream closes, and a
// delivery or a cancellation coming after must not sit in a queue nobody
// reads.
func TestClosedStreamTakesNothingMore(t *testing.T) {
	e := New(Config{})
	g := NewGRPC(e, grpcengine.Config{}, slog.New(slog.DiscardHandler))
	e.SetDeliverer("GRPC", g)
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})
	ctx, cancel := context.WithCancel(context.Background())
	stream := &fakeExecuteStream{ctx: ctx, executorID: "a", goAhead: make(chan struct{})} // sends nothing
	streamDone := make(chan struct{})
	go func() { _ = g.Server().ExecuteStream(stream); close(streamDone) }()
	waitStreams(t, g, "a", 1)

	first, second := submit(t, e, TaskSpec{ExecutorType: "tax"}), submit(t, e, TaskSpec{ExecutorType: "tax"})
	e.dispatch(t.Context())
	for _, task := range []Task{first, second} {
		got, _ := e.Task(task.ID)
		require.Equal(t, "grpc-bidi", got.Transport, "queued on the stream")
	}
	cancel()
	<-streamDone
	for _, task := range []Task{first, second} {
		got, _ := e.Task(task.ID)
		assert.Equal(t, StatePending, got.State, "a task never sent stayed with the closed stream")
	}
	assert.Zero(t, g.Server().Queued("a"))

	_, offered := g.Offer(Executor{ID: "a"}, first.Domain())
	assert.False(t, offered, "a task offered to a closed stream")
	assert.False(t, g.Cancel("a", first.ID, "too late"))
}

// freeAddress returns an address of 127.0.0.1 that was free a moment ago.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// TestEngineStopsWithAnExecutorStreamOpen: the engine process stops at
// once although an executor holds a StreamTasks stream open, which it
// never ends on its own.
func TestEngineStopsWithAnExecutorStreamOpen(t *testing.T) {
	grpcAddr, httpAddr := freeAddress(t), freeAddress(t)
	o := Options{HTTPAddr: httpAddr, GRPCAddr: grpcAddr, Kafka: KafkaConfig{EmbeddedAddress: freeAddress(t), Partitions: 1}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx, o, io.Discard, slog.New(slog.DiscardHandler)) }()

	conn, err := ggrpc.NewClient(grpcAddr, ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := gamelanv1.NewExecutorServiceClient(conn)
	require.Eventually(t, func() bool {
		_, err := client.RegisterExecutor(context.Background(), &gamelanv1.RegisterExecutorRequest{
			ExecutorId: "exec-1", ExecutorType: "tax", MaxConcurrentTasks: 4,
			CommunicationType: gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC,
		})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "engine never answered RegisterExecutor")

	streamCtx, closeStream := context.WithCancel(context.Background())
	defer closeStream()
	stream, err := client.StreamTasks(streamCtx, &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: 4})
	require.NoError(t, err)
	// A task through the API proves the stream's handler is running.
	resp, err := http.Post("http://"+httpAddr+"/api/v1/tasks", "application/json", strings.NewReader(`{"executorType":"tax"}`))
	require.NoError(t, err)
	resp.Body.Close()
	_, err = stream.Recv()
	require.NoError(t, err)

	cancel()
	select {
	case err := <-stopped:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		closeStream()
		<-stopped
		t.Fatal("the engine did not stop within 10s while an executor's stream was open")
	}
}

// HTTP/2 frames the keepalive test writes and reads (RFC 9113).
const (
	frameSettings = 0x4
	framePing     = 0x6
	frameGoAway   = 0x7
	flagAck       = 0x1
)

// h2Client is a bare HTTP/2 client connection: grpc-go's client will not
// ping more often than every 10s, which would make the test slow.
type h2Client struct {
	conn    net.Conn
	mu      sync.Mutex // one writer at a time
	pingAck chan uint64
	goAway  chan uint32 // its error code
}

func dialH2(t *testing.T, addr string) *h2Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &h2Client{conn: conn, pingAck: make(chan uint64, 1), goAway: make(chan uint32, 1)}
	_, err = io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, c.write(frameSettings, 0, nil))
	go c.read()
	return c
}

func (c *h2Client) write(frameType, flags byte, payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(payload)
	header := []byte{byte(n >> 16), byte(n >> 8), byte(n), frameType, flags, 0, 0, 0, 0}
	_, err := c.conn.Write(append(header, payload...))
	return err
}

func (c *h2Client) ping(data uint64) error {
	return c.write(framePing, 0, binary.BigEndian.AppendUint64(nil, data))
}

// read acknowledges the server's settings and reports ping acks and
// GOAWAY until the connection ends.
func (c *h2Client) read() {
	var header [9]byte
	for {
		if _, err := io.ReadFull(c.conn, header[:]); err != nil {
			return
		}
		payload := make([]byte, int(header[0])<<16|int(header[1])<<8|int(header[2]))
		if _, err := io.ReadFull(c.conn, payload); err != nil {
			return
		}
		switch frameType, flags := header[3], header[4]; {
		case frameType == frameSettings && flags&flagAck == 0:
			_ = c.write(frameSettings, flagAck, nil)
		case frameType == framePing && flags&flagAck != 0:
			c.pingAck <- binary.BigEndian.Uint64(payload)
		case frameType == frameGoAway && len(payload) >= 8:
			c.goAway <- binary.BigEndian.Uint32(payload[4:8])
			return
		}
	}
}

// TestEngineEnforcesTheDefaultKeepalivePolicy pings an idle connection to
// the engine's gRPC server back to back: like grpc-java, gRPC C-core and
// grpc-go servers by default, the reference engine permits no client ping
// without an open call (and one every 5 minutes with calls), and answers
// the third with GOAWAY ENHANCE_YOUR_CALM, so that executors are tested
// against what a real engine permits.
func TestEngineEnforcesTheDefaultKeepalivePolicy(t *testing.T) {
	t.Parallel()
	server := NewGRPC(New(Config{}), grpcengine.Config{}, slog.New(slog.DiscardHandler)).Server()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, server.Start(l))
	t.Cleanup(server.Close)

	c := dialH2(t, l.Addr().String())
	const enhanceYourCalm = 0xb
	for i := range uint64(10) {
		require.NoError(t, c.ping(i))
		select {
		case data := <-c.pingAck:
			require.Equal(t, i, data)
		case code := <-c.goAway:
			assert.EqualValues(t, enhanceYourCalm, code, "GOAWAY error code")
			assert.GreaterOrEqual(t, i, uint64(2), "two strikes are tolerated")
			return
		case <-time.After(5 * time.Second):
			t.Fatalf("ping %d not answered within 5s", i+1)
		}
	}
	t.Fatal("ten pings in a row on an idle connection, and no GOAWAY: the engine is more lenient than a real one")
}
