package devengine

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"

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
		g := NewGRPC(e, nil, slog.New(slog.DiscardHandler))
		e.SetDeliverer("GRPC", g)
		ctx, cancel := context.WithCancel(context.Background())
		engineDone := make(chan struct{})
		go func() { _ = e.Run(ctx); close(engineDone) }()
		e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", MaxConcurrent: 4})

		stream := &fakeExecuteStream{ctx: ctx, executorID: "a", goAhead: make(chan struct{}, 16)}
		streamDone := make(chan struct{})
		go func() { _ = g.ExecuteStream(stream); close(streamDone) }()
		waitFor(t, e, "the session open", func() bool { return g.Route(Executor{ID: "a"}) == "grpc-bidi" })

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
