package component

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// grpcEnv configures the service against a test engine on loopback.
func grpcEnv(engineAddr, intake string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":          "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":          "0",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET": engineAddr,
		"GAMELAN_EXECUTOR_GRPC_INTAKE":        intake,
		"GAMELAN_EXECUTOR_ENABLED_TYPES":      "calculate-tax",
		"GAMELAN_EXECUTOR_INSTANCE_ID":        "test",
		"GAMELAN_EXECUTOR_LOG_LEVEL":          "warn",
	}
}

const taxExecutorID = "executor-calculate-tax-test"

func TestGRPCPushRunsTasksEndToEnd(t *testing.T) {
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := grpcEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "info"
	r := start(t, nil, func(ctx context.Context, stdout, stderr io.Writer) error {
		return runFixtures(ctx, nil, vars, stdout, stderr)
	})
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
	reg, ok := engine.Registration(taxExecutorID)
	require.True(t, ok, "registered ids: %v", engine.Registrations())
	assert.Equal(t, gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC, reg.GetCommunicationType())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		ack, err := engine.Push(ctx, reg.GetEndpoint(), &dispatcherpb.ExecutionRequest{
			RunId: "run-push", NodeId: fmt.Sprintf("n%d", i), Attempt: 1,
			Variables: map[string]string{"amount": strconv.Itoa(100 * (i + 1))},
			Signature: grpctest.Signature("run-push", taxExecutorID),
		})
		require.NoError(t, err)
		require.True(t, ack.GetAccepted(), "ack: %v", ack)
	}
	require.NoError(t, engine.WaitForResults(ctx, 20))
	for i := range 20 {
		res := engine.UniqueResults()[fmt.Sprintf("run-push:n%d:1", i)]
		require.NotNil(t, res)
		assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%v", res.GetError())
		assert.InDelta(t, float64(10*(i+1)), res.GetOutput().AsMap()["tax"], 1e-9)
	}
	require.NoError(t, r.stop(t))
	assert.Contains(t, engine.Unregistered(), taxExecutorID)
}
