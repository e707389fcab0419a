package grpctest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// TestStreamMaxConcurrentRecordsEachCall checks that the engine records the
// max_concurrent of every StreamTasks call, per executor, in call order.
func TestStreamMaxConcurrentRecordsEachCall(t *testing.T) {
	engine := grpctest.NewEngine(grpctest.WithStreamTasksCompletesImmediately())
	c := client(t, engine.Start(t))
	for _, asked := range []int32{7, 0, 3} {
		stream, err := c.StreamTasks(testContext(t), &gamelanv1.StreamTasksRequest{ExecutorId: "exec-1", MaxConcurrent: asked})
		require.NoError(t, err)
		_, err = stream.Recv() // the stream ends at once
		require.Error(t, err)
	}
	require.Equal(t, 3, engine.StreamCalls("exec-1"))
	assert.Equal(t, []int32{7, 0, 3}, engine.StreamMaxConcurrent("exec-1"))
	assert.Empty(t, engine.StreamMaxConcurrent("exec-2"), "another executor")
}
