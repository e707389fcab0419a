package grpc

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
)

// switchHealth is a given health service whose answer the test sets, and
// which counts its calls, to show the push server serves it and not its own.
type switchHealth struct {
	healthpb.UnimplementedHealthServer
	serving atomic.Bool
	calls   atomic.Int64
}

func (h *switchHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.calls.Add(1)
	if h.serving.Load() {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
}

func TestPushServiceNameIsTheServedOne(t *testing.T) {
	assert.Equal(t, dispatcherpb.Executor_ServiceDesc.ServiceName, PushServiceName)
}

// TestPushServesTheGivenHealthWithoutAToken checks that a given health
// service replaces the server's own (its answer follows the given one, not
// Start), and that health calls need no token while Execute without one is
// refused with 401.
func TestPushServesTheGivenHealthWithoutAToken(t *testing.T) {
	given := &switchHealth{}
	engine := pushEngine(t)
	push, intake := startedPushServer(t, ServerConfig{
		Authenticate: func(string) error { return errors.New("no token is good enough") },
		Health:       given,
	}, 4)
	// A plain client with no credentials, as grpc_health_probe is.
	conn, err := ggrpc.NewClient(push.Addr().String(), ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := client.Check(testContext(t), &healthpb.HealthCheckRequest{Service: PushServiceName})
		require.NoError(t, err, "health Check without a token")
		return resp.GetStatus()
	}

	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(), "started, but the given service says not serving")
	given.serving.Store(true)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check())
	assert.EqualValues(t, 2, given.calls.Load(), "calls answered by the given service")

	requireRefused(t, execute(t, engine, push, request("run-health", "no-token")), ackUnauthenticated)
	assert.Zero(t, intake.Attempts(), "offers of a push without a token")
}
