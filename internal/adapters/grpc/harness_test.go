package grpc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The executor the porttest tasks name: the TaskSource suite's tasks carry
// this executor id and type, so the harnesses serve exactly that executor.
const (
	taxExecutorID   = "tax-service-tax-calculator"
	taxExecutorType = "tax-calculator"
	taxNodeType     = "calculate-tax"
)

// waitTimeout bounds every wait for something that must happen.
const waitTimeout = 10 * time.Second

// fastReconnect paces stream reconnection in tests that are not about it.
var fastReconnect = domain.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2, Jitter: 0.2}

// pushRetry paces a push harness that the executor refused with 503.
var pushRetry = domain.Backoff{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testContext is bounded by waitTimeout and ends with the test.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// taxRegistration is the registration of the executor porttest tasks name.
func taxRegistration() domain.Registration {
	return domain.Registration{
		ExecutorID: taxExecutorID,
		Descriptor: domain.Descriptor{
			Type:               taxExecutorType,
			CommunicationType:  domain.CommunicationGRPC,
			MaxConcurrentTasks: 64,
			SupportedNodeTypes: []string{taxNodeType},
			Version:            "1.0.0",
		},
		CommunicationType: domain.CommunicationGRPC,
		Endpoint:          "127.0.0.1:9090",
		Metadata:          map[string]string{"name": "tax-service", "version": "1.0.0", "host": "127.0.0.1"},
	}
}

// dial connects to an engine and closes the connection when the test ends.
func dial(t *testing.T, cfg ClientConfig) *ggrpc.ClientConn {
	t.Helper()
	conn, err := Dial(cfg)
	require.NoError(t, err, "Dial %s", cfg.Target)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// startEngine serves a grpctest engine on 127.0.0.1 and dials it in
// plaintext.
func startEngine(t *testing.T, opts ...grpctest.Option) (*grpctest.Engine, *ggrpc.ClientConn) {
	t.Helper()
	engine := grpctest.NewEngine(opts...)
	addr := engine.Start(t)
	return engine, dial(t, ClientConfig{Target: addr})
}

// newPushServer listens on a free port of 127.0.0.1, serving the tax
// executor unless cfg names executors, and closes when the test ends.
func newPushServer(t *testing.T, cfg ServerConfig) *PushServer {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	if cfg.Executors == nil {
		cfg.Executors = []domain.Registration{taxRegistration()}
	}
	push, err := NewPushServer(cfg, testLogger())
	require.NoError(t, err, "NewPushServer")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = push.Close(ctx) // calls still in progress at the end of a test are cut short
	})
	return push
}

// newTestIntake builds the gRPC task source of mode, with its own push
// server, for the tax executor, over conn.
func newTestIntake(t *testing.T, conn ggrpc.ClientConnInterface, mode string, reg domain.Registration, reconnect domain.Backoff) (*TaskSource, *ResultSink) {
	t.Helper()
	source, sink, err := NewIntake(conn, newPushServer(t, ServerConfig{}), IntakeConfig{
		Mode:      mode,
		Executors: []domain.Registration{reg},
		Reconnect: reconnect,
	}, testLogger())
	require.NoError(t, err, "NewIntake %s", mode)
	return source, sink
}

// startSource starts source with intake and stops it when the test ends.
func startSource(t *testing.T, source ports.TaskSource, intake ports.Intake) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		require.NoError(t, source.Stop(ctx), "Stop")
	})
	require.NoError(t, source.Start(t.Context(), intake), "Start")
}

// pushRequest is the ExecutionRequest the Gamelan engine sends for task,
// signed for executorID: variables are the task's context as strings (Java
// toString text for values that are not strings), the token is the
// execution token.
func pushRequest(task domain.Task, executorID string) *dispatcherpb.ExecutionRequest {
	variables := make(map[string]string, len(task.Context))
	for k, v := range task.Context {
		variables[k] = variableText(v)
	}
	return &dispatcherpb.ExecutionRequest{
		RunId:          task.RunID,
		NodeId:         task.NodeID,
		Attempt:        int32(task.Attempt),
		Token:          task.ExecutionToken,
		Variables:      variables,
		IdempotencyKey: task.IdempotencyKey,
		Signature:      grpctest.Signature(task.RunID, executorID),
	}
}

func variableText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// pusher pushes requests to an executor from the engine side in the
// background, as the porttest harness asks: each request is retried while
// the executor answers 503 (or cannot be reached), until it is accepted,
// refused for another reason, or the test ends. The test's cleanup waits
// for every push.
type pusher struct {
	ctx    context.Context
	engine *grpctest.Engine
	addr   string
	wg     sync.WaitGroup
}

func newPusher(t *testing.T, engine *grpctest.Engine, addr string) *pusher {
	p := &pusher{ctx: t.Context(), engine: engine, addr: addr}
	t.Cleanup(p.wg.Wait)
	return p
}

func (p *pusher) publish(req *dispatcherpb.ExecutionRequest) {
	p.wg.Go(func() {
		for attempt := 0; ; attempt++ {
			ack, err := p.engine.Push(p.ctx, p.addr, req)
			if err == nil && (ack.GetAccepted() || ack.GetCode() != ackUnavailable) {
				return
			}
			if pushRetry.Wait(p.ctx, attempt) != nil {
				return
			}
		}
	})
}

// answeringSource supplies, for a pull source under the porttest suite, the
// part of the runtime that the porttest Intake leaves out: the runtime
// settles a task once the engine has acknowledged its result, and the
// engine (grpctest, like a real one) keeps a streamed task outstanding,
// counting against the stream's limit, until that result arrives. So when
// the suite settles a task, its result is delivered through the source's
// ResultSink: COMPLETED for a nil settlement, a retryable FAILED SHUTDOWN for
// a hand-back (what the runtime answers for a task it abandons and the
// source cannot redeliver).
//
// The runtime frees a task's room before its result reaches the engine;
// the porttest Intake frees it only after the Settle callback returns. To
// keep the runtime's order, the result is delivered in the background once
// the intake has room again.
type answeringSource struct {
	ports.TaskSource
	sink ports.ResultSink
	ctx  context.Context
	wg   *sync.WaitGroup
}

func answering(t *testing.T, source ports.TaskSource, sink ports.ResultSink) *answeringSource {
	wg := &sync.WaitGroup{}
	t.Cleanup(wg.Wait)
	return &answeringSource{TaskSource: source, sink: sink, ctx: t.Context(), wg: wg}
}

// Start implements ports.TaskSource.
func (s *answeringSource) Start(ctx context.Context, intake ports.Intake) error {
	return s.TaskSource.Start(ctx, &answeringIntake{Intake: intake, source: s})
}

type answeringIntake struct {
	ports.Intake
	source *answeringSource
}

// Offer implements ports.Intake.
func (in *answeringIntake) Offer(ctx context.Context, d ports.Delivery) error {
	if d.Task == nil {
		return in.Intake.Offer(ctx, d)
	}
	task, settle := *d.Task, d.Settle
	d.Settle = func(err error) {
		if settle != nil {
			settle(err)
		}
		in.answer(task, err)
	}
	return in.Intake.Offer(ctx, d)
}

// awaitRoom waits until the intake has room again. It watches the porttest
// Intake rather than calling AwaitCapacity, which is the source's call to
// make: the suite checks that a stopped source makes none, and a task
// settled after Stop is answered too.
func (in *answeringIntake) awaitRoom(ctx context.Context) error {
	pi, ok := in.Intake.(*porttest.Intake)
	if !ok {
		_, err := in.AwaitCapacity(ctx)
		return err
	}
	return pi.WaitUntil(ctx, func() bool { return len(pi.Outstanding()) < pi.Capacity() })
}

func (in *answeringIntake) answer(task domain.Task, settled error) {
	s := in.source
	s.wg.Go(func() {
		if in.awaitRoom(s.ctx) != nil && s.ctx.Err() != nil {
			return // the test is over
		}
		result := domain.ResultFor(&task, domain.StatusCompleted)
		result.ExecutorID, result.CompletedAt = task.ExecutorID, time.Now()
		if settled != nil {
			result.Status = domain.StatusFailed
			result.Error = &domain.ErrorInfo{Code: domain.CodeShutdown, Message: settled.Error(), Retryable: true}
		}
		ctx, cancel := context.WithTimeout(s.ctx, waitTimeout)
		defer cancel()
		_ = s.sink.Deliver(ctx, []domain.Result{result})
	})
}

// registrationFromProto converts what the engine received at
// RegisterExecutor back to a domain registration. The descriptor's version
// and declared communication type are not on the wire.
func registrationFromProto(pr *gamelanv1.RegisterExecutorRequest) domain.Registration {
	reg := domain.Registration{
		ExecutorID: pr.GetExecutorId(),
		Descriptor: domain.Descriptor{
			Type:               pr.GetExecutorType(),
			MaxConcurrentTasks: int(pr.GetMaxConcurrentTasks()),
			SupportedNodeTypes: pr.GetSupportedNodeTypes(),
		},
		Endpoint: pr.GetEndpoint(),
		Metadata: pr.GetMetadata(),
	}
	switch pr.GetCommunicationType() {
	case gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC:
		reg.CommunicationType = domain.CommunicationGRPC
	case gamelanv1.CommunicationType_COMMUNICATION_TYPE_KAFKA:
		reg.CommunicationType = domain.CommunicationKafka
	case gamelanv1.CommunicationType_COMMUNICATION_TYPE_REST:
		reg.CommunicationType = domain.CommunicationREST
	}
	return reg
}

// heartbeatFromProto converts a heartbeat the engine received.
func heartbeatFromProto(pr *gamelanv1.HeartbeatRequest) domain.Heartbeat {
	return domain.Heartbeat{
		ExecutorID:     pr.GetExecutorId(),
		CurrentTasks:   int(pr.GetCurrentTaskCount()),
		CompletedTasks: int(pr.GetHealth().GetCompletedTasks()),
		FailedTasks:    int(pr.GetHealth().GetFailedTasks()),
		Status:         pr.GetHealth().GetStatus(),
		Load:           pr.GetHealth().GetLoad(),
	}
}
