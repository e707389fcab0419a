package kafka

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A malformed task record is answered FAILED INVALID_TASK by whatever
// identity its top level yields. Records truncated after their identity, or
// nested deeper than the JSON decoder allows in another field, used to yield
// none (the whole record was decoded again to read it), and were skipped
// without an answer; a record holding a second JSON value after the task
// was taken as the task, the rest dropped without a word. Each is now
// malformed, and answerable.
func TestMalformedRecordsYieldTheIdentityBeforeTheFault(t *testing.T) {
	const identity = `"runId":"r1","nodeId":"n1","attempt":2,"token":"tok","taskId":"t1","targetExecutor":"executor-x"`
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	for name, value := range map[string]string{
		"nested 10,000 levels":   `{` + identity + `,"context":{"deep":` + deep + `}}`,
		"deep before the ids":    `{"configuration":` + deep + `,` + identity + `}`,
		"truncated":              `{` + identity + `,"context":{"amount":`,
		"a second value after":   `{` + identity + `,"context":{}} {"runId":"r2","nodeId":"n2","attempt":1}`,
		"garbage after":          `{` + identity + `} garbage`,
		"context of wrong shape": `{` + identity + `,"context":[1,2]}`,
	} {
		t.Run(name, func(t *testing.T) {
			task, err := decodeTask([]byte(value), 1<<20)
			require.Error(t, err)
			assert.True(t, errors.Is(err, errMalformed), "%v", err)
			assert.Equal(t, "r1", task.RunID)
			assert.Equal(t, "n1", task.NodeID)
			assert.Equal(t, 2, task.Attempt)
			assert.Equal(t, "tok", task.ExecutionToken)
			assert.Equal(t, "t1", task.TaskID)
			assert.Equal(t, "executor-x", task.ExecutorID)
			assert.True(t, task.Addressable())
		})
	}

	// What comes after the fault is not guessed.
	task, err := decodeTask([]byte(`{"runId":"r1","context":{"amount":`), 1<<20)
	require.ErrorIs(t, err, errMalformed)
	assert.Equal(t, "r1", task.RunID)
	assert.Empty(t, task.NodeID)
	assert.Equal(t, attemptUnknown, task.Attempt)
	assert.False(t, task.Addressable())

	// A well-formed record followed by blanks is still one record.
	task, err = decodeTask([]byte("{"+identity+`,"context":{"amount":1}}`+" \n"), 1<<20)
	require.NoError(t, err)
	assert.Equal(t, "r1", task.RunID)
	assert.Equal(t, map[string]any{"amount": 1.0}, task.Context)
}
