package health_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/health"
)

const servedName = "tech.kayys.gamelan.dispatcher.Executor"

// flag is a check that fails with its reason until set.
type flag struct{ up atomic.Bool }

func (f *flag) check() error {
	if !f.up.Load() {
		return errors.New("not yet")
	}
	return nil
}

// serveGRPC serves g on a loopback listener and returns a client that
// carries no credentials, as grpc_health_probe does.
func serveGRPC(t *testing.T, g *health.GRPC) healthpb.HealthClient {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, g)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = server.Serve(listener)
	}()
	conn, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		server.Stop()
		<-served
	})
	return healthpb.NewHealthClient(conn)
}

func callContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// check asks for service's status, failing t on an error.
func check(t *testing.T, client healthpb.HealthClient, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := client.Check(callContext(t), &healthpb.HealthCheckRequest{Service: service})
	require.NoError(t, err, "Check(%q)", service)
	return resp.GetStatus()
}

func TestGRPCHealthAnswersLikeTheProbes(t *testing.T) {
	var live, ready flag
	probes := health.New(time.Second)
	probes.AddLiveness("runtime", live.check)
	probes.AddReadiness("executor", ready.check)
	client := serveGRPC(t, health.NewGRPC(probes, 0, servedName))

	for _, service := range []string{"", servedName, health.LivenessService} {
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, client, service), "nothing up: %q", service)
	}

	live.up.Store(true)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(t, client, health.LivenessService), "live")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, client, ""), "live, not ready")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, client, servedName), "live, not ready")

	ready.up.Store(true)
	for _, service := range []string{"", servedName, health.LivenessService} {
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(t, client, service), "all up: %q", service)
	}

	// A process that should be restarted is not ready either, as on HTTP.
	live.up.Store(false)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, client, ""), "ready, not live")
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(t, client, servedName), "ready, not live")
}

func TestGRPCHealthUnknownServiceIsNotFound(t *testing.T) {
	client := serveGRPC(t, health.NewGRPC(health.New(time.Second), 0, servedName))

	_, err := client.Check(callContext(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err), "Check of an unknown service: %v", err)

	watch, err := client.Watch(callContext(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVICE_UNKNOWN, first.GetStatus(), "Watch of an unknown service")
}

func TestGRPCHealthListsEveryName(t *testing.T) {
	var ready flag
	probes := health.New(time.Second)
	probes.AddReadiness("executor", ready.check)
	client := serveGRPC(t, health.NewGRPC(probes, 0, servedName))

	resp, err := client.List(callContext(t), &healthpb.HealthListRequest{})
	require.NoError(t, err)
	got := make(map[string]healthpb.HealthCheckResponse_ServingStatus)
	for name, s := range resp.GetStatuses() {
		got[name] = s.GetStatus()
	}
	assert.Equal(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"":                     healthpb.HealthCheckResponse_NOT_SERVING,
		servedName:             healthpb.HealthCheckResponse_NOT_SERVING,
		health.LivenessService: healthpb.HealthCheckResponse_SERVING,
	}, got)
}

// TestGRPCHealthWatchFollowsReadiness flips readiness both ways and waits
// for the Watch to report each change; the short interval only makes the
// test quick, the receive waits for the change itself.
func TestGRPCHealthWatchFollowsReadiness(t *testing.T) {
	var ready flag
	probes := health.New(time.Second)
	probes.AddReadiness("executor", ready.check)
	client := serveGRPC(t, health.NewGRPC(probes, 10*time.Millisecond, servedName))

	for _, service := range []string{"", servedName} {
		ready.up.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err)
		next := func() healthpb.HealthCheckResponse_ServingStatus {
			t.Helper()
			resp, err := watch.Recv()
			require.NoError(t, err, "Watch(%q)", service)
			return resp.GetStatus()
		}
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next(), "first answer is the current status")
		ready.up.Store(true)
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, next(), "ready")
		ready.up.Store(false) // draining
		assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next(), "draining")
		cancel()
		_, err = watch.Recv()
		assert.Equal(t, codes.Canceled, status.Code(err), "the stream ends with the caller's context")
	}
}

// TestGRPCHealthWatchSendsOnlyChanges checks that an unchanged status is not
// sent again: after the first answer, the next one is the change.
func TestGRPCHealthWatchSendsOnlyChanges(t *testing.T) {
	var ready flag
	var evaluated atomic.Int64
	probes := health.New(time.Second)
	probes.AddReadiness("executor", func() error {
		evaluated.Add(1)
		return ready.check()
	})
	client := serveGRPC(t, health.NewGRPC(probes, time.Millisecond, servedName))

	watch, err := client.Watch(callContext(t), &healthpb.HealthCheckRequest{Service: servedName})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, first.GetStatus())
	// Let the Watch evaluate the unchanged status several times before the
	// change, so that a repeat, had one been sent, would come first.
	require.Eventually(t, func() bool { return evaluated.Load() >= 5 }, 10*time.Second, time.Millisecond)
	ready.up.Store(true)
	second, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, second.GetStatus())
}

// TestGRPCHealthWatchEndsWithTheCaller checks that a Watch whose caller has
// gone returns on the server, so that a graceful stop does not wait for it.
func TestGRPCHealthWatchEndsWithTheCaller(t *testing.T) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, health.NewGRPC(health.New(time.Second), time.Hour))
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	conn, err := grpc.NewClient(listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })

	ctx, cancel := context.WithCancel(callContext(t))
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus(), "no checks: serving")
	cancel()

	// GracefulStop returns only once every handler has returned; the
	// hour-long interval shows the Watch ended with its stream, not on a tick.
	stopped := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-callContext(t).Done():
		t.Fatal("the Watch kept running after its caller had gone")
	}
}
