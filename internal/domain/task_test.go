package domain

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTaskValidate(t *testing.T) {
	valid := func() Task { return Task{RunID: "run-1", NodeID: "node_1", Attempt: 1} }
	tests := []struct {
		name    string
		modify  func(*Task)
		wantErr string
	}{
		{"valid", func(*Task) {}, ""},
		{"largest attempt", func(t *Task) { t.Attempt = MaxAttempt }, ""},
		{"ids of 255 characters", func(t *Task) { t.RunID, t.NodeID = strings.Repeat("r", 255), strings.Repeat("n", 255) }, ""},
		{"matching idempotency key", func(t *Task) { t.IdempotencyKey = "run-1:node_1:1" }, ""},
		{"executor id", func(t *Task) { t.ExecutorID = "tax-service_1" }, ""},
		{"positive timeout", func(t *Task) { t.Timeout = time.Second }, ""},
		{"empty run id", func(t *Task) { t.RunID = "" }, "run id is empty"},
		{"empty node id", func(t *Task) { t.NodeID = "" }, "node id is empty"},
		{"run id with a space", func(t *Task) { t.RunID = "run 1" }, `run id "run 1" is not 1-255 letters`},
		{"run id with a colon", func(t *Task) { t.RunID = "run:1" }, `run id "run:1"`},
		{"run id of 256 characters", func(t *Task) { t.RunID = strings.Repeat("r", 256) }, "run id"},
		{"node id with a slash", func(t *Task) { t.NodeID = "a/b" }, `node id "a/b"`},
		{"node id not ASCII", func(t *Task) { t.NodeID = "nœud" }, "node id"},
		{"executor id with a dot", func(t *Task) { t.ExecutorID = "tax.service" }, `executor id "tax.service"`},
		{"attempt zero", func(t *Task) { t.Attempt = 0 }, "attempt 0 is not between 1 and 2147483647"},
		{"negative attempt", func(t *Task) { t.Attempt = -1 }, "attempt -1 is not between 1"},
		{"attempt above 32 bits", func(t *Task) { t.Attempt = MaxAttempt + 1 }, "attempt 2147483648 is not between 1"},
		{"another run's idempotency key", func(t *Task) { t.IdempotencyKey = "shared:node_1:1" }, `idempotency key "shared:node_1:1" is not "run-1:node_1:1"`},
		{"idempotency key of another attempt", func(t *Task) { t.IdempotencyKey = "run-1:node_1:2" }, "idempotency key"},
		{"task id too long", func(t *Task) { t.TaskID = strings.Repeat("t", MaxTaskIDBytes+1) }, "task id"},
		{"task id not UTF-8", func(t *Task) { t.TaskID = "\xff" }, "task id"},
		{"execution token too long", func(t *Task) { t.ExecutionToken = strings.Repeat("t", MaxExecutionTokenBytes+1) }, "execution token"},
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
			assert.Less(t, len(err.Error()), 400, "the error quotes values clipped")
		})
	}
}

func TestTaskValidateQuotesHugeValuesClipped(t *testing.T) {
	task := Task{RunID: strings.Repeat("x", 2<<20) + " ", NodeID: "n", Attempt: 1}
	err := task.Validate()
	require.Error(t, err)
	assert.Less(t, len(err.Error()), 200)
	assert.Contains(t, err.Error(), "more bytes")
}

func TestTaskAddressable(t *testing.T) {
	addressable := []Task{
		{RunID: "r", NodeID: "n", Attempt: 1},
		{RunID: "r", NodeID: "n", Attempt: 0, IdempotencyKey: "bad"}, // invalid, but a result can name it
		{RunID: "r", NodeID: "n", Attempt: -3},
		{RunID: "r", NodeID: "n", Attempt: MaxAttempt, Timeout: -time.Second},
	}
	for _, task := range addressable {
		assert.True(t, task.Addressable(), "%+v", task)
	}
	unaddressable := []Task{
		{NodeID: "n", Attempt: 1},
		{RunID: "r", Attempt: 1},
		{RunID: "r r", NodeID: "n", Attempt: 1},
		{RunID: strings.Repeat("r", 600<<10), NodeID: "n", Attempt: 1},
		{RunID: "r", NodeID: "n", Attempt: MaxAttempt + 1},
		{RunID: "r", NodeID: "n", Attempt: 1, TaskID: strings.Repeat("t", MaxTaskIDBytes+1)},
		{RunID: "r", NodeID: "n", Attempt: 1, ExecutionToken: strings.Repeat("t", MaxExecutionTokenBytes+1)},
	}
	for _, task := range unaddressable {
		assert.False(t, task.Addressable(), "%.80v", task)
	}
}

func TestIdempotencyKey(t *testing.T) {
	assert.Equal(t, "run-1:node-1:2", IdempotencyKey("run-1", "node-1", 2))
	assert.Equal(t, "::0", IdempotencyKey("", "", 0))
}

func TestTaskKeyIsTheIdentityNeverTheEnginesKey(t *testing.T) {
	task := Task{RunID: "run-1", NodeID: "node-1", Attempt: 3}
	assert.Equal(t, "run-1:node-1:3", task.Key())

	// A key naming another run must not make this task a duplicate of it.
	task.IdempotencyKey = "shared:node-1:3"
	assert.Equal(t, "run-1:node-1:3", task.Key())
	assert.Equal(t, "run-1:node-1:3", task.ID())

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
	sentinels := []error{ErrInvalidTask, ErrOverloaded, ErrDraining, ErrClosed, ErrHandedBack, ErrNotRegistered, ErrUnauthenticated,
		ErrResultRejected, ErrUndeliverable}
	for i, a := range sentinels {
		for j, b := range sentinels {
			if i != j {
				assert.False(t, errors.Is(a, b), "%v must not match %v", a, b)
			}
		}
	}
}

func TestResultTooLargeIsARejection(t *testing.T) {
	assert.ErrorIs(t, ErrResultTooLarge, ErrResultRejected)
	assert.NotErrorIs(t, ErrResultRejected, ErrResultTooLarge)
}

func TestTimeoutFromSecondsDoesNotOverflow(t *testing.T) {
	assert.Equal(t, 30*time.Second, TimeoutFromSeconds(30))
	assert.Equal(t, time.Duration(0), TimeoutFromSeconds(0))
	assert.Equal(t, MaxTimeout, TimeoutFromSeconds(int64(MaxTimeout/time.Second)))
	for _, seconds := range []int64{-1, int64(MaxTimeout/time.Second) + 1, 18446744074, math.MaxInt64, math.MinInt64} {
		task := Task{RunID: "run", NodeID: "node", Attempt: 1, Timeout: TimeoutFromSeconds(seconds)}
		assert.Error(t, task.Validate(), "timeoutSeconds %d", seconds)
	}
}
