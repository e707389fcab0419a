package grpc

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
)

// A result carrying strings that are not UTF-8 (the token of a streamed
// task recovered from its raw frame, a handler's message cut inside a
// character) used to fail protobuf's encoding, and the result was resent
// for ever, never delivered. Its bad bytes now become U+FFFD, as JSON makes
// them on Kafka, and the result encodes.
func TestResultWithStringsNotUTF8Encodes(t *testing.T) {
	r := domain.Result{
		TaskID: "task\xff", RunID: "r1", NodeID: "n1", Attempt: 1, ExecutionToken: "token\xff",
		Status: domain.StatusFailed, CompletedAt: time.Now(),
		Error: &domain.ErrorInfo{Code: "CODE\xc3(", Message: "cut \xe2\x82", StackTrace: "stack \xed\xa0\x80"},
	}
	pr := resultToProto(r)
	_, err := proto.Marshal(pr)
	require.NoError(t, err)
	assert.Equal(t, "task\uFFFD", pr.GetTaskId())
	assert.Equal(t, "token\uFFFD", pr.GetExecutionToken())
	assert.Equal(t, "CODE\uFFFD(", pr.GetError().GetCode())
	assert.Equal(t, "cut \uFFFD", pr.GetError().GetMessage())
	assert.Equal(t, "stack \uFFFD", pr.GetError().GetStackTrace())

	// Valid strings are sent exactly as they are.
	r = domain.Result{TaskID: "tâche-1", RunID: "r1", NodeID: "n1", Attempt: 1, ExecutionToken: "jeton-é", Status: domain.StatusCompleted}
	pr = resultToProto(r)
	assert.Equal(t, "tâche-1", pr.GetTaskId())
	assert.Equal(t, "jeton-é", pr.GetExecutionToken())
}
