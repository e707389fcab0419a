package executor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/pkg/executor"
)

func TestLoggerOutsideATaskIsTheDefault(t *testing.T) {
	assert.Same(t, slog.Default(), executor.Logger(context.Background()))
	span := executor.Span(context.Background())
	require.NotNil(t, span)
	assert.False(t, span.IsRecording())
	assert.False(t, span.SpanContext().IsValid())
}

// logOnce is a handler that writes one line through executor.Logger.
type logOnce struct{}

func (logOnce) Descriptor() executor.Descriptor {
	return executor.Descriptor{Type: "log-once", CommunicationType: executor.GRPC}
}

func (logOnce) Execute(ctx context.Context, _ *executor.Task) (*executor.Result, error) {
	executor.Logger(ctx).Info("from the handler")
	return executor.Success(nil), nil
}

func TestLoggerWithoutTraceContextHasNoTraceFields(t *testing.T) {
	var buf bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, nil)))

	task := &executor.Task{RunID: "r", NodeID: "n", Attempt: 3, ExecutorType: "log-once"}
	res := app.Invoke(context.Background(), logOnce{}, task, time.Second)
	require.Equal(t, executor.StatusCompleted, res.Status)

	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line), buf.String())
	assert.Equal(t, "r", line["run_id"])
	assert.Equal(t, "n", line["node_id"])
	assert.Equal(t, "r:n:3", line["task_id"], "the task id falls back to the key")
	assert.Equal(t, float64(3), line["attempt"])
	assert.Equal(t, "log-once", line["executor_type"])
	assert.NotContains(t, line, "trace_id")
	assert.NotContains(t, line, "span_id")
}
