package domain

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTaskValidate(t *testing.T) {
	valid := func() Task { return Task{RunID: "run-1", NodeID: "node-1", Attempt: 1} }
	tests := []struct {
		name    string
		modify  func(*Task)
		wantErr string
	}{
		{"valid", func(*Task) {}, ""},
		{"attempt zero", func(t *Task) { t.Attempt = 0 }, ""},
		{"positive timeout", func(t *Task) { t.Timeout = time.Second }, ""},
		{"empty run id", func(t *Task) { t.RunID = "" }, "run id is empty"},
		{"empty node id", func(t *Task) { t.NodeID = "" }, "node id is empty"},
		{"negative attempt", func(t *Task) { t.Attempt = -1 }, "attempt -1 is negative"},
		{"negative timeout", func(t *Task) { t.Timeout = -time.Second }, "timeout -1s is negative"},
		{"timeout above a year", func(t *Task) { t.Timeout = MaxTimeout + time.Second }, "timeout is more than 31536000 seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := valid()
			tt.modify(&task)
			err := task.Validate()
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrInvalidTask)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	assert.Equal(t, "run-1:node-1:2", IdempotencyKey("run-1", "node-1", 2))
	assert.Equal(t, "::0", IdempotencyKey("", "", 0))
}

func TestTaskKeyPrefersTheEnginesIdempotencyKey(t *testing.T) {
	task := Task{RunID: "run-1", NodeID: "node-1", Attempt: 3}
	assert.Equal(t, "run-1:node-1:3", task.Key())

	task.IdempotencyKey = "engine-key"
	assert.Equal(t, "engine-key", task.Key())
}

func TestTaskIDFallsBackToKey(t *testing.T) {
	task := Task{RunID: "run-1", NodeID: "node-1", Attempt: 3}
	assert.Equal(t, "run-1:node-1:3", task.ID())

	task.IdempotencyKey = "engine-key"
	assert.Equal(t, "engine-key", task.ID())

	task.TaskID = "task-9"
	assert.Equal(t, "task-9", task.ID())
}

func TestResultForAddressesTheTask(t *testing.T) {
	task := &Task{RunID: "run-1", NodeID: "node-1", Attempt: 2, ExecutionToken: "tok"}
	res := ResultFor(task, StatusFailed)
	assert.Equal(t, Result{
		TaskID:         "run-1:node-1:2",
		RunID:          "run-1",
		NodeID:         "node-1",
		Attempt:        2,
		ExecutionToken: "tok",
		Status:         StatusFailed,
	}, res)
	assert.Equal(t, "run-1:node-1:2", res.Key())
}

func TestStatusValid(t *testing.T) {
	for _, s := range []Status{StatusCompleted, StatusFailed, StatusCancelled, StatusSkipped} {
		assert.True(t, s.Valid(), "%q", s)
	}
	for _, s := range []Status{"", "completed", "RUNNING", "SUCCESS", " COMPLETED"} {
		assert.False(t, s.Valid(), "%q", s)
	}
}

func TestErrorsAreDistinct(t *testing.T) {
	sentinels := []error{ErrInvalidTask, ErrOverloaded, ErrDraining, ErrClosed, ErrHandedBack, ErrNotRegistered, ErrUnauthenticated}
	for i, a := range sentinels {
		for j, b := range sentinels {
			if i != j {
				assert.False(t, errors.Is(a, b), "%v must not match %v", a, b)
			}
		}
	}
}

func TestTimeoutFromSecondsDoesNotOverflow(t *testing.T) {
	assert.Equal(t, 30*time.Second, TimeoutFromSeconds(30))
	assert.Equal(t, time.Duration(0), TimeoutFromSeconds(0))
	assert.Equal(t, MaxTimeout, TimeoutFromSeconds(int64(MaxTimeout/time.Second)))
	for _, seconds := range []int64{-1, int64(MaxTimeout/time.Second) + 1, 18446744074, math.MaxInt64, math.MinInt64} {
		task := Task{RunID: "run", NodeID: "node", Timeout: TimeoutFromSeconds(seconds)}
		assert.Error(t, task.Validate(), "timeoutSeconds %d", seconds)
	}
}
