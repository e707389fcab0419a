package devengine

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// TestGRPCHealthAnswersWithoutAToken runs the reference engine with a JWT
// secret and asks its gRPC server's health service as grpc_health_probe
// would, with no credentials: SERVING, while a RegisterExecutor without a
// token is still refused.
func TestGRPCHealthAnswersWithoutAToken(t *testing.T) {
	grpcAddr := freeAddress(t)
	env := map[string]string{"DEVENGINE_JWT_SECRET": hex.EncodeToString(securitytest.Secret(t))}
	o, err := parseOptions([]string{"-grpc", grpcAddr, "-http", freeAddress(t), "-kafka", freeAddress(t)},
		func(key string) string { return env[key] }, io.Discard)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- run(ctx, o, io.Discard, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); assert.NoError(t, <-stopped) })

	conn, err := ggrpc.NewClient(grpcAddr, ggrpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	health := healthpb.NewHealthClient(conn)
	callCtx, done := context.WithTimeout(t.Context(), 10*time.Second)
	defer done()
	for _, service := range []string{"", gamelanv1.ExecutorService_ServiceDesc.ServiceName, "liveness"} {
		// WaitForReady: the engine starts serving in the background.
		resp, err := health.Check(callCtx, &healthpb.HealthCheckRequest{Service: service}, ggrpc.WaitForReady(true))
		require.NoError(t, err, "Check(%q)", service)
		assert.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), service)
	}

	_, err = gamelanv1.NewExecutorServiceClient(conn).RegisterExecutor(callCtx,
		&gamelanv1.RegisterExecutorRequest{ExecutorId: "exec-1", ExecutorType: "tax", MaxConcurrentTasks: 1})
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "RegisterExecutor without a token: %v", err)
}
