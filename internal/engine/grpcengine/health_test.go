package grpcengine_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// serveWithAuth starts a Server whose Auth refuses every call, and returns
// it with a connection that carries no credentials.
func serveWithAuth(t *testing.T) (*grpcengine.Server, *grpc.ClientConn) {
	t.Helper()
	s := grpcengine.New(&handler{limit: 1}, grpcengine.Config{
		Auth: func(context.Context) error { return errors.New("no credentials") },
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, s.Start(lis))
	t.Cleanup(s.Close)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return s, conn
}

// TestHealthNeedsNoCredentials checks the health service's names and
// statuses with Auth refusing everything, which still refuses the
// ExecutorService's calls.
func TestHealthNeedsNoCredentials(t *testing.T) {
	s, conn := serveWithAuth(t)
	client := healthpb.NewHealthClient(conn)
	for _, service := range []string{"", gamelanv1.ExecutorService_ServiceDesc.ServiceName, "liveness"} {
		resp, err := client.Check(testContext(t), &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err, "Check(%q)", service)
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), service)
	}
	_, err := client.Check(testContext(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err), "unknown service: %v", err)
	list, err := client.List(testContext(t), &healthpb.HealthListRequest{})
	require.NoError(t, err)
	assert.Len(t, list.GetStatuses(), 3)
	assert.Zero(t, s.Refused(), "health calls refused")

	_, err = gamelanv1.NewExecutorServiceClient(conn).Heartbeat(testContext(t), &gamelanv1.HeartbeatRequest{ExecutorId: "exec-1"})
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "Heartbeat without credentials: %v", err)
	stream, err := gamelanv1.NewExecutorServiceClient(conn).StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1"})
	require.NoError(t, err)
	_, err = stream.Recv()
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "StreamTasks without credentials: %v", err)
	assert.Equal(t, 2, s.Refused(), "task calls refused")
}

// TestHealthWatchSeesShutdown checks that an open Watch is told NOT_SERVING
// when Shutdown begins and then ended, so that Shutdown does not wait for it.
func TestHealthWatchSeesShutdown(t *testing.T) {
	s, conn := serveWithAuth(t)
	watch, err := healthpb.NewHealthClient(conn).Watch(testContext(t), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())

	// Shutdown may wait longer than the test does, so that a Watch it had
	// to cut short hard would fail the test, not pass it.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 3*waitFor)
	defer cancel()
	stopped := make(chan struct{})
	go func() { s.Shutdown(shutdownCtx); close(stopped) }()
	second, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, second.GetStatus(), "at Shutdown")
	_, err = watch.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err), "the Watch ends: %v", err)
	select {
	case <-stopped:
	case <-testContext(t).Done():
		t.Fatal("Shutdown waited for the Watch")
	}
}
