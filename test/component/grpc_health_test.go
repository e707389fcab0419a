package component

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	grpcadapter "github.com/gamelan-go/executor/internal/adapters/grpc"
	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/health"
)

// registrationGate refuses RegisterExecutor until opened, and remembers the
// endpoint the executor advertised, so that its push server can be reached
// before it is registered.
type registrationGate struct {
	open     atomic.Bool
	mu       sync.Mutex
	endpoint string
	seen     chan struct{}
	once     sync.Once
}

func (g *registrationGate) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if reg, ok := req.(*gamelanv1.RegisterExecutorRequest); ok {
		g.mu.Lock()
		g.endpoint = reg.GetEndpoint()
		g.mu.Unlock()
		g.once.Do(func() { close(g.seen) })
		if !g.open.Load() {
			return nil, status.Error(codes.Unavailable, "registration closed for the test")
		}
	}
	return handler(ctx, req)
}

// TestGRPCHealthFollowsReadiness runs the service with inbound JWT on and
// watches the push server's health with a plain client carrying no
// credentials, as grpc_health_probe does: NOT_SERVING while the engine
// refuses the registration, SERVING once registered (as /q/health/ready),
// NOT_SERVING while draining; "liveness" SERVING throughout the run; an
// unknown service NOT_FOUND; and Execute without a token is still refused.
func TestGRPCHealthFollowsReadiness(t *testing.T) {
	gate := &registrationGate{seen: make(chan struct{})}
	engine := grpctest.NewEngine(grpctest.WithServerOptions(grpc.ChainUnaryInterceptor(gate.intercept)))
	addr := engine.Start(t)
	vars := serviceEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = printableSecret(t)
	vars["GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS"] = "60"
	r := startService(t, vars)

	select {
	case <-gate.seen:
	case <-deadline(t, conditionTimeout).Done():
		t.Fatal("the executor never tried to register")
	}
	gate.mu.Lock()
	endpoint := gate.endpoint
	gate.mu.Unlock()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := client.Check(deadline(t, conditionTimeout), &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err, "Check(%q) without credentials", service)
		return resp.GetStatus()
	}

	// Not registered: not ready on either protocol, but alive.
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(""), "not registered")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(grpcadapter.PushServiceName), "not registered")
	code, _ := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, http.StatusServiceUnavailable, code, "HTTP readiness while not registered")
	waitForStatus(t, r.baseURL, "/q/health/live", http.StatusOK)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(health.LivenessService), "alive while not registered")
	_, err = client.Check(deadline(t, conditionTimeout), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err), "unknown service: %v", err)

	watchCtx, endWatch := context.WithCancel(deadline(t, conditionTimeout))
	defer endWatch()
	watch, err := client.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: grpcadapter.PushServiceName})
	require.NoError(t, err)
	next := func(why string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := watch.Recv()
		require.NoError(t, err, why)
		return resp.GetStatus()
	}
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next("first answer"))

	gate.open.Store(true)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, next("after registration"))
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(""), "ready")

	// Health needs no token; tasks still do.
	ack, err := engine.Push(deadline(t, conditionTimeout), endpoint, taxPush("run-health", "no-token", "10"))
	require.NoError(t, err)
	assert.EqualValues(t, 401, ack.GetCode(), "Execute without a token: %v", ack)

	// Hold a result so that the drain waits for its delivery with the push
	// server still listening, and stop the service.
	held, release := engine.HoldReportResults()
	defer release()
	valid := engineToken(t, engineMinterConfig(vars["GAMELAN_EXECUTOR_JWT_SECRET"]))
	ack, err = engine.Push(withBearer(deadline(t, conditionTimeout), valid), endpoint, taxPush("run-health", "held", "10"))
	require.NoError(t, err)
	require.True(t, ack.GetAccepted(), "push with a token: %v", ack)
	select {
	case <-held:
	case <-deadline(t, conditionTimeout).Done():
		t.Fatal("the result was never delivered")
	}
	r.cancel()
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next("draining"))
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(""), "draining")
	endWatch()
	release()
	require.NoError(t, r.stop(t))
}
