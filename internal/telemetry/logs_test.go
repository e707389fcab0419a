package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoggerClipsEveryValueFromOutside(t *testing.T) {
	var out bytes.Buffer
	log := NewLogger(&out, slog.LevelInfo, false)
	huge := strings.Repeat("r", 2<<20)
	log.With(slog.String("run_id", huge)).Warn("push task refused",
		slog.String("node_id", huge), slog.Any("error", errors.New("bad token: "+huge)),
		slog.Group("request", slog.String("signature", huge)))

	assert.Less(t, out.Len(), 6*MaxLogValueBytes, "a line must not grow with its values")
	var line map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &line), "still one JSON line: %.200s", out.String())
	assert.Contains(t, line["run_id"], "more bytes)")
	assert.Contains(t, line["node_id"], "more bytes)")
	assert.Contains(t, line["error"], "bad token: rrr")
	assert.Contains(t, line["request"].(map[string]any)["signature"], "more bytes)")
	assert.Equal(t, "push task refused", line["msg"])
}

func TestLoggerKeepsShortValuesAsTheyAre(t *testing.T) {
	var out bytes.Buffer
	NewLogger(&out, slog.LevelInfo, true).Info("task finished", slog.String("run_id", "run-1"), slog.Int("attempt", 3))
	assert.Contains(t, out.String(), "run_id=run-1 attempt=3")
}

func TestThrottleLetsABurstThroughPerIntervalAndCountsTheRest(t *testing.T) {
	now := time.Unix(0, 0)
	th := NewThrottle(time.Second, 2)
	th.now = func() time.Time { return now }

	for i := range 2 {
		ok, dropped := th.Allow("auth")
		require.True(t, ok, "line %d", i)
		assert.Zero(t, dropped)
	}
	for range 5 {
		ok, _ := th.Allow("auth")
		assert.False(t, ok)
	}
	ok, _ := th.Allow("invalid")
	assert.True(t, ok, "keys are throttled apart")

	now = now.Add(time.Second)
	ok, dropped := th.Allow("auth")
	require.True(t, ok)
	assert.Equal(t, 5, dropped, "the next line says how many were dropped")
	_, dropped = th.Allow("auth")
	assert.Zero(t, dropped)
}

func TestThrottleLogWritesTheDroppedCount(t *testing.T) {
	var out bytes.Buffer
	log := NewLogger(&out, slog.LevelInfo, false)
	now := time.Unix(0, 0)
	th := NewThrottle(time.Minute, 1)
	th.now = func() time.Time { return now }
	for range 100 {
		th.Log(log, slog.LevelWarn, "auth", "push task refused")
	}
	assert.Equal(t, 1, strings.Count(out.String(), "\n"), "one line for a flood of 100")
	now = now.Add(time.Minute)
	th.Log(log, slog.LevelWarn, "auth", "push task refused")
	assert.Contains(t, out.String(), `"similar_lines_dropped":99`)
}
