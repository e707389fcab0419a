package grpc

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// deepStruct returns a Struct nested depth levels, deeper than the protobuf
// decoder's recursion limit when depth is large.
func deepStruct(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{"leaf": structpb.NewBoolValue(true)}}
	for range depth {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(s)}}
	}
	return s
}

func TestDecodeTaskRecoversTheIdentityOfAnUndecodableTask(t *testing.T) {
	pt := &gamelanv1.ExecutionTask{TaskId: "task-1", RunId: "run-1", NodeId: "node-1", NodeType: "calculate-tax",
		Attempt: 3, ExecutionToken: "tok", Context: deepStruct(6000), TimeoutSeconds: 30}
	data, err := proto.Marshal(pt)
	require.NoError(t, err)

	task, malformed := decodeTask(data)
	require.Error(t, malformed, "a context nested 6000 levels is beyond the decoder's limit")
	assert.Contains(t, malformed.Error(), "could not be decoded")
	assert.Equal(t, "task-1", task.TaskID)
	assert.Equal(t, "run-1", task.RunID)
	assert.Equal(t, "node-1", task.NodeID)
	assert.Equal(t, 3, task.Attempt)
	assert.Equal(t, "tok", task.ExecutionToken)
	assert.True(t, task.Addressable())
	assert.Nil(t, task.Context, "nothing of the undecodable part is kept")
}

func TestDecodeTaskDecodesAGoodTask(t *testing.T) {
	pt := &gamelanv1.ExecutionTask{TaskId: "task-1", RunId: "run-1", NodeId: "node-1", Attempt: -2, Context: deepStruct(10)}
	data, err := proto.Marshal(pt)
	require.NoError(t, err)
	task, malformed := decodeTask(data)
	require.NoError(t, malformed)
	assert.Equal(t, -2, task.Attempt, "a negative int32 attempt comes back as sent")
	assert.NotNil(t, task.Context["a"])
}

func TestRecoverTaskIdentityStopsAtTheFirstUnreadableField(t *testing.T) {
	pt := &gamelanv1.ExecutionTask{TaskId: "task-1", RunId: "run-1", NodeId: "node-1", Attempt: 1}
	data, err := proto.Marshal(pt)
	require.NoError(t, err)
	for cut := range len(data) { // every truncation: no panic, a prefix of the identity
		task := recoverTaskIdentity(data[:cut])
		assert.LessOrEqual(t, len(task.RunID), len("run-1"))
	}
	assert.Equal(t, "run-1", recoverTaskIdentity(data).RunID)
	assert.Equal(t, "", recoverTaskIdentity([]byte{0xff, 0xff, 0xff}).RunID, "garbage yields nothing")
}

func TestDecodeEngineMessage(t *testing.T) {
	encode := func(m *gamelanv1.EngineMessage) []byte {
		data, err := proto.Marshal(m)
		require.NoError(t, err)
		return data
	}
	good, err := decodeEngineMessage(encode(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{
		Task: &gamelanv1.ExecutionTask{RunId: "run-1", NodeId: "node-1", Attempt: 1}}}))
	require.NoError(t, err)
	require.NotNil(t, good.task)
	assert.NoError(t, good.malformed)
	assert.Equal(t, "run-1", good.task.RunID)

	deep, err := decodeEngineMessage(encode(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Task{
		Task: &gamelanv1.ExecutionTask{RunId: "run-2", NodeId: "node-2", Attempt: 2, Context: deepStruct(6000)}}}))
	require.NoError(t, err)
	require.NotNil(t, deep.task)
	assert.Error(t, deep.malformed)
	assert.Equal(t, "run-2", deep.task.RunID)
	assert.Equal(t, 2, deep.task.Attempt)

	cancellation, err := decodeEngineMessage(encode(&gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Cancellation{
		Cancellation: &gamelanv1.TaskCancellation{TaskId: "task-1", Reason: "why"}}}))
	require.NoError(t, err)
	assert.Equal(t, "task-1", cancellation.cancellation.GetTaskId())

	_, err = decodeEngineMessage([]byte{0x0a, 0xff, 0xff, 0xff})
	assert.Error(t, err, "garbage is an error, not a task")
}

func TestGoawayReason(t *testing.T) {
	for msg, want := range map[string]string{
		`rpc error: code = Unavailable desc = closing transport due to: connection error: desc = "error reading from server: EOF", received prior goaway: code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`: `code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`,
		`stream tasks: rpc error: code = Unavailable desc = Too many pings`:                                 `code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`,
		`rpc error: code = Unavailable desc = received prior goaway: code: NO_ERROR, debug data: "max_age"`: `code: NO_ERROR, debug data: "max_age"`,
	} {
		reason, ok := goawayReason(errors.New(msg))
		assert.True(t, ok, msg)
		assert.Equal(t, want, reason)
	}
	_, ok := goawayReason(errors.New("rpc error: code = Unavailable desc = connection refused"))
	assert.False(t, ok)
}
