package grpc

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Tests of the push server (PROTOCOL.md 1.2): the engine side is a grpctest
// engine calling Execute, the runtime side a porttest Intake that records
// what was offered.

// mailRegistration is a second executor type, for routing among several.
func mailRegistration() domain.Registration {
	return domain.Registration{
		ExecutorID: "mail-service-mailer",
		Descriptor: domain.Descriptor{Type: "mailer", MaxConcurrentTasks: 4, SupportedNodeTypes: []string{"send-mail"}},
	}
}

// pushEngine returns an engine that pushes to push (it need not serve).
func pushEngine(t *testing.T, opts ...grpctest.Option) *grpctest.Engine {
	t.Helper()
	engine := grpctest.NewEngine(opts...)
	t.Cleanup(engine.Close)
	return engine
}

// startedPushServer is a push server for executors, started with an intake
// of the given capacity.
func startedPushServer(t *testing.T, cfg ServerConfig, capacity int) (*PushServer, *porttest.Intake) {
	t.Helper()
	push := newPushServer(t, cfg)
	intake := porttest.NewIntake(capacity)
	startSource(t, push, intake)
	return push, intake
}

// execute pushes req once and returns the acknowledgement.
func execute(t *testing.T, engine *grpctest.Engine, push *PushServer, req *dispatcherpb.ExecutionRequest, opts ...ggrpc.CallOption) *dispatcherpb.ExecutionAck {
	t.Helper()
	ack, err := engine.Push(testContext(t), push.Addr().String(), req, opts...)
	require.NoError(t, err, "Execute")
	return ack
}

func requireAccepted(t *testing.T, ack *dispatcherpb.ExecutionAck) {
	t.Helper()
	require.True(t, ack.GetAccepted(), "ack %d %q: want accepted", ack.GetCode(), ack.GetMessage())
	require.EqualValues(t, ackAccepted, ack.GetCode(), "ack code")
}

func requireRefused(t *testing.T, ack *dispatcherpb.ExecutionAck, code int32) {
	t.Helper()
	require.False(t, ack.GetAccepted(), "ack %d %q: want refused", ack.GetCode(), ack.GetMessage())
	require.Equal(t, code, ack.GetCode(), "ack code (message %q)", ack.GetMessage())
	require.NotEmpty(t, ack.GetMessage(), "a refusal says why")
}

// request is a well-formed push request with no signature and no variables.
func request(runID, nodeID string) *dispatcherpb.ExecutionRequest {
	return &dispatcherpb.ExecutionRequest{
		RunId: runID, NodeId: nodeID, Attempt: 1, Token: "token-" + nodeID,
		IdempotencyKey: domain.IdempotencyKey(runID, nodeID, 1),
	}
}

func TestPushRefusesMalformedRequests(t *testing.T) {
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{}, 4)
	for name, req := range map[string]*dispatcherpb.ExecutionRequest{
		"no run id":  request("", "node-a"),
		"no node id": request("run-malformed", ""),
		"neither":    {Attempt: 1},
	} {
		t.Run(name, func(t *testing.T) {
			requireRefused(t, execute(t, engine, push, req), ackBadRequest)
		})
	}
	assert.Zero(t, intake.Attempts(), "offers of malformed requests; %s", intake)

	// The server stays up and serves the next good request.
	requireAccepted(t, execute(t, engine, push, request("run-malformed", "node-a")))
	require.Len(t, intake.Offers(), 1)
	got := intake.Offers()[0].Task
	assert.Equal(t, "run-malformed", got.RunID)
	assert.Equal(t, "node-a", got.NodeID)
	assert.Equal(t, 1, got.Attempt)
	assert.Equal(t, "token-node-a", got.ExecutionToken)
	assert.Equal(t, "run-malformed:node-a:1", got.IdempotencyKey)
	assert.False(t, intake.Offers()[0].Redeliverable, "a pushed task is not redeliverable")
}

// TestPushRouting checks the routing rules of PROTOCOL.md 1.2, in order:
// the executor id in the signature, the __node_type__ variable, a node id
// equal to a supported node type, the only hosted type.
func TestPushRouting(t *testing.T) {
	tax, mail := taxRegistration(), mailRegistration()
	signed := func(req *dispatcherpb.ExecutionRequest, executorID string) *dispatcherpb.ExecutionRequest {
		req.Signature = grpctest.Signature(req.GetRunId(), executorID)
		return req
	}
	withNodeType := func(req *dispatcherpb.ExecutionRequest, nodeType string) *dispatcherpb.ExecutionRequest {
		req.Variables = map[string]string{domain.NodeTypeKey: nodeType, "orderId": "ORDER-1"}
		return req
	}
	cases := []struct {
		name      string
		hosted    []domain.Registration
		req       *dispatcherpb.ExecutionRequest
		want      domain.Task // the routing fields only
		refused   bool
		triedText []string // what a refusal must name
	}{
		{
			name:   "signature names a hosted executor",
			hosted: []domain.Registration{tax, mail},
			req:    signed(request("run-1", "node-a"), mail.ExecutorID),
			want:   domain.Task{ExecutorID: mail.ExecutorID, ExecutorType: "mailer"},
		},
		{
			name:   "signature wins over the node type variable",
			hosted: []domain.Registration{tax, mail},
			req:    signed(withNodeType(request("run-1", "node-a"), taxNodeType), mail.ExecutorID),
			want:   domain.Task{ExecutorID: mail.ExecutorID, ExecutorType: "mailer"},
		},
		{
			name:   "node type variable, signature of another executor",
			hosted: []domain.Registration{tax, mail},
			req:    signed(withNodeType(request("run-1", "node-a"), "send-mail"), "somebody-else"),
			want:   domain.Task{NodeType: "send-mail", ExecutorType: "mailer"},
		},
		{
			name:   "node type variable naming an executor type",
			hosted: []domain.Registration{tax, mail},
			req:    withNodeType(request("run-1", "node-a"), taxExecutorType),
			want:   domain.Task{NodeType: taxExecutorType, ExecutorType: taxExecutorType},
		},
		{
			name:   "node id is a supported node type, signature of another run",
			hosted: []domain.Registration{tax, mail},
			req: func() *dispatcherpb.ExecutionRequest {
				req := request("run-1", taxNodeType)
				req.Signature = grpctest.Signature("run-2", tax.ExecutorID)
				return req
			}(),
			want: domain.Task{NodeType: taxNodeType, ExecutorType: taxExecutorType},
		},
		{
			name:   "the only hosted type",
			hosted: []domain.Registration{mail},
			req:    request("run-1", "node-a"),
			want:   domain.Task{ExecutorType: "mailer"},
		},
		{
			name:    "nothing matches",
			hosted:  []domain.Registration{tax, mail},
			req:     signed(withNodeType(request("run-1", "node-a"), "unknown-type"), "somebody-else"),
			refused: true,
			triedText: []string{
				`signature names executor "somebody-else"`, `__node_type__ "unknown-type"`,
				`node id "node-a"`, "2 executor types are hosted",
			},
		},
		{
			name:    "nothing at all to route on",
			hosted:  []domain.Registration{tax, mail},
			req:     &dispatcherpb.ExecutionRequest{RunId: "run-1", NodeId: "node-a", Attempt: 1, Signature: "%%% not base64"},
			refused: true,
			triedText: []string{
				"no usable signature", "no __node_type__ variable", `node id "node-a"`, "2 executor types are hosted",
			},
		},
	}
	engine := pushEngine(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			push, intake := startedPushServer(t, ServerConfig{Executors: tc.hosted}, 4)
			ack := execute(t, engine, push, tc.req)
			if tc.refused {
				requireRefused(t, ack, ackBadRequest)
				for _, text := range tc.triedText {
					assert.Contains(t, ack.GetMessage(), text, "the refusal names what was tried")
				}
				assert.Zero(t, intake.Attempts(), "offers of an unroutable task")
				return
			}
			requireAccepted(t, ack)
			require.Len(t, intake.Offers(), 1)
			got := intake.Offers()[0].Task
			assert.Equal(t, tc.want.ExecutorID, got.ExecutorID, "ExecutorID")
			assert.Equal(t, tc.want.ExecutorType, got.ExecutorType, "ExecutorType")
			assert.Equal(t, tc.want.NodeType, got.NodeType, "NodeType")
		})
	}
}

func TestExecutorIDFromSignature(t *testing.T) {
	encode := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		signature, runID, want string
		ok                     bool
	}{
		{encode("run-1tax-service-tax-calculator"), "run-1", "tax-service-tax-calculator", true},
		{encode("run-1"), "run-1", "", false},         // nothing after the run id
		{encode("run-2executor"), "run-1", "", false}, // another run
		{"%%% not base64", "run-1", "", false},
		{"", "run-1", "", false},
	} {
		got, ok := executorIDFromSignature(tc.signature, tc.runID)
		assert.Equal(t, tc.ok, ok, "signature %q", tc.signature)
		assert.Equal(t, tc.want, got, "signature %q", tc.signature)
	}
}

// TestPushRefusesWhenUnavailable checks the 503s: before Start, when the
// runtime is full or draining, and after Stop.
func TestPushRefusesWhenUnavailable(t *testing.T) {
	engine := pushEngine(t)
	push := newPushServer(t, ServerConfig{})

	requireRefused(t, execute(t, engine, push, request("run-503", "before-start")), ackUnavailable)

	intake := porttest.NewIntake(1)
	require.NoError(t, push.Start(t.Context(), intake))
	requireAccepted(t, execute(t, engine, push, request("run-503", "first")))
	requireRefused(t, execute(t, engine, push, request("run-503", "full")), ackUnavailable)
	require.Len(t, intake.Refusals(), 1)
	require.ErrorIs(t, intake.Refusals()[0].Err, domain.ErrOverloaded)

	intake.Outstanding()[0].Settle(nil)
	requireAccepted(t, execute(t, engine, push, request("run-503", "room-again")))

	intake.Drain()
	requireRefused(t, execute(t, engine, push, request("run-503", "draining")), ackUnavailable)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, push.Stop(ctx))
	attempts := intake.Attempts()
	requireRefused(t, execute(t, engine, push, request("run-503", "after-stop")), ackUnavailable)
	assert.Equal(t, attempts, intake.Attempts(), "offers after Stop")
}

// TestPushPassesVariablesThroughAsStrings checks that variables reach the
// runtime exactly as the engine sent them: strings, parsed or not (whether
// they suit the executor is the executor's business, which answers FAILED).
func TestPushPassesVariablesThroughAsStrings(t *testing.T) {
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{}, 4)
	variables := map[string]string{
		"amount":   "twelve euros",
		"quantity": "3",
		"express":  "true",
		"customer": "{name=Zoë Ångström, address={city=Malmö}}", // Java toString of a map
		"items":    "[sku-1, 2, {sku=X-1}]",
		"empty":    "",
	}
	req := request("run-vars", "node-a")
	req.Variables = variables
	requireAccepted(t, execute(t, engine, push, req))

	require.Len(t, intake.Offers(), 1)
	want := make(map[string]any, len(variables))
	for k, v := range variables {
		want[k] = v
	}
	assert.Equal(t, want, intake.Offers()[0].Task.Context, "task context")
}

// TestPushRefusesOversizedRequests checks that a request over
// ServerConfig.MaxMessageSize fails with ResourceExhausted, is not offered,
// and that the server keeps serving.
func TestPushRefusesOversizedRequests(t *testing.T) {
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{MaxMessageSize: 4 << 10}, 4)

	big := request("run-size", "too-big")
	big.Variables = map[string]string{"blob": strings.Repeat("x", 8<<10)}
	_, err := engine.Push(testContext(t), push.Addr().String(), big)
	require.Error(t, err, "a request of 8 KiB to a server taking 4 KiB")
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "status of an oversized request: %v", err)
	assert.Zero(t, intake.Attempts(), "offers of an oversized request")

	small := request("run-size", "small")
	small.Variables = map[string]string{"blob": strings.Repeat("x", 1<<10)}
	requireAccepted(t, execute(t, engine, push, small))
	require.Len(t, intake.Offers(), 1)
}

// TestPushHealthService checks the standard health service: NOT_SERVING
// before Start, SERVING after, NOT_SERVING after Stop.
func TestPushHealthService(t *testing.T) {
	push := newPushServer(t, ServerConfig{})
	conn, err := ggrpc.NewClient(push.Addr().String(), ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	health := healthpb.NewHealthClient(conn)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := health.Check(testContext(t), &healthpb.HealthCheckRequest{})
		require.NoError(t, err, "health Check")
		return resp.GetStatus()
	}

	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(), "before Start")
	require.NoError(t, push.Start(t.Context(), porttest.NewIntake(1)))
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(), "after Start")
	require.NoError(t, push.Stop(t.Context()))
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(), "after Stop")
}

// TestPushServerConfiguration checks construction errors and that Close
// ends the server.
func TestPushServerConfiguration(t *testing.T) {
	_, err := NewPushServer(ServerConfig{Address: "127.0.0.1:0"}, testLogger())
	require.Error(t, err, "a push server with no executor types")

	taken := newPushServer(t, ServerConfig{})
	_, err = NewPushServer(ServerConfig{Address: taken.Addr().String(), Executors: []domain.Registration{taxRegistration()}}, testLogger())
	require.ErrorContains(t, err, taken.Addr().String(), "listening on a taken address names it")

	push, err := NewPushServer(ServerConfig{Address: "127.0.0.1:0", Executors: []domain.Registration{taxRegistration()}}, testLogger())
	require.NoError(t, err)
	addr := push.Addr().String()
	push.Close(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = pushEngine(t).Push(ctx, addr, request("run-closed", "node-a"))
	require.Error(t, err, "Execute on a closed push server")
	assert.NotEqual(t, codes.DeadlineExceeded, status.Code(err), "a closed server refuses at once: %v", err)
}
