package grpc

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Tests of the push server (docs/protocol.md, section 2.3): the engine side is a grpctest
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
		"no run id":                     request("", "node-a"),
		"no node id":                    request("run-malformed", ""),
		"neither":                       {Attempt: 1},
		"run id against the id rule":    request("run malformed", "node-a"),
		"attempt zero":                  {RunId: "run-malformed", NodeId: "node-a"},
		"another run's idempotency key": {RunId: "run-y", NodeId: "node-a", Attempt: 1, IdempotencyKey: "run-x:node-a:1"},
	} {
		t.Run(name, func(t *testing.T) {
			requireRefused(t, execute(t, engine, push, req), ackBadRequest)
		})
	}
	assert.Empty(t, intake.Offers(), "a malformed push was accepted; %s", intake)
	for _, r := range intake.Refusals() {
		assert.ErrorIs(t, r.Err, domain.ErrInvalidTask)
	}

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
	assert.True(t, intake.Offers()[0].Refusable, "a pushed task is refused, not answered, when invalid")
}

// TestPushPassesTheSignaturesExecutorID checks what the push server tells
// the runtime's routing rule (see app's route): the executor id a valid
// Gamelan signature names (standard Base64 of the run id followed by the
// executor id), and the variables, __node_type__ included. The server does
// not route: a push for a type not hosted here is accepted, and the runtime
// answers it NO_EXECUTOR.
func TestPushPassesTheSignaturesExecutorID(t *testing.T) {
	tax, mail := taxRegistration(), mailRegistration()
	signed := func(req *dispatcherpb.ExecutionRequest, signature string) *dispatcherpb.ExecutionRequest {
		req.Signature = signature
		return req
	}
	cases := []struct {
		name       string
		req        *dispatcherpb.ExecutionRequest
		executorID string
	}{
		{"signature of a hosted executor", signed(request("run-1", "node-a"), grpctest.Signature("run-1", mail.ExecutorID)), mail.ExecutorID},
		{"signature of another executor", signed(request("run-1", "node-a"), grpctest.Signature("run-1", "somebody-else")), "somebody-else"},
		{"signature of another run", signed(request("run-1", "node-a"), grpctest.Signature("run-2", tax.ExecutorID)), ""},
		{"signature that is not Base64", signed(request("run-1", "node-a"), "%%% not base64"), ""},
		{"signature naming an id against the rule", signed(request("run-1", "node-a"), grpctest.Signature("run-1", "tax service")), ""},
		{"no signature", request("run-1", "node-a"), ""},
	}
	engine := pushEngine(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			push, intake := startedPushServer(t, ServerConfig{Executors: []domain.Registration{tax, mail}}, 4)
			tc.req.Variables = map[string]string{domain.NodeTypeKey: "unknown-type", "orderId": "ORDER-1"}
			requireAccepted(t, execute(t, engine, push, tc.req))
			require.Len(t, intake.Offers(), 1)
			got := intake.Offers()[0].Task
			assert.Equal(t, tc.executorID, got.ExecutorID, "ExecutorID")
			assert.Empty(t, got.ExecutorType, "the push server declares no type")
			assert.Equal(t, map[string]any{domain.NodeTypeKey: "unknown-type", "orderId": "ORDER-1"}, got.Context)
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, push.Close(ctx), "Close with no call in progress")
	require.NoError(t, push.Close(ctx), "Close again")
	_, err = pushEngine(t).Push(ctx, addr, request("run-closed", "node-a"))
	require.Error(t, err, "Execute on a closed push server")
	assert.NotEqual(t, codes.DeadlineExceeded, status.Code(err), "a closed server refuses at once: %v", err)
}

// TestPushRefusesAnUnexpectedRuntimeErrorAsUnavailable checks that an Offer
// error the Intake contract does not name is taken as transient (503, the
// engine retries), never as a bad request that would drop the task.
func TestPushRefusesAnUnexpectedRuntimeErrorAsUnavailable(t *testing.T) {
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{}, 4)
	intake.RefuseNext(errors.New("runtime hiccup"))
	requireRefused(t, execute(t, engine, push, request("run-hiccup", "a")), ackUnavailable)
	requireAccepted(t, execute(t, engine, push, request("run-hiccup", "a")))
}

// A rate-limit refusal is a 503 whose message names the type, the limit
// and the delay in ms, and whose "retry-after" response header gives the
// delay in whole seconds, rounded up.
func TestPushRefusesARateLimitWithARetryHint(t *testing.T) {
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{}, 4)
	intake.RefuseNext(&domain.RateLimitedError{Type: "calculate-tax", Limit: domain.RateLimit{PerSecond: 50, Burst: 10}, RetryAfter: 1200 * time.Millisecond})
	var header metadata.MD
	ack := execute(t, engine, push, request("run-limited", "a"), ggrpc.Header(&header))
	requireRefused(t, ack, ackUnavailable)
	assert.Contains(t, ack.GetMessage(), `"calculate-tax" rate limited to 50/s:10: retry after 1200 ms`)
	assert.Equal(t, []string{"2"}, header.Get("retry-after"))
	requireAccepted(t, execute(t, engine, push, request("run-limited", "a")))
}
