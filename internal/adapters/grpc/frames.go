package grpc

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// frame is a message received from an engine stream as its encoded bytes.
// The pull sources decode frames themselves, so that a task the protobuf
// decoder refuses (a context nested deeper than its recursion limit, say)
// is answered FAILED INVALID_TASK by the identity its first fields carry,
// instead of ending the stream with the task lost and unanswered.
type frame struct{ data []byte }

// frameCodec is the codec of the pull streams: protobuf for what is sent,
// and raw bytes for frames received (anything else is protobuf too).
type frameCodec struct{}

var protoCodec = encoding.GetCodecV2(protoenc.Name)

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.data = data.Materialize()
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

// Name is protobuf's: the wire does not change.
func (frameCodec) Name() string { return protoenc.Name }

// decodeTask decodes an ExecutionTask frame. When the frame cannot be
// decoded, the task holds the identity recovered from its top-level fields
// and malformed says why.
func decodeTask(data []byte) (task domain.Task, malformed error) {
	var pt gamelanv1.ExecutionTask
	if err := proto.Unmarshal(data, &pt); err != nil {
		return recoverTaskIdentity(data), fmt.Errorf("the task could not be decoded: %w", err)
	}
	return taskFromProto(&pt), nil
}

// Field numbers of ExecutionTask and EngineMessage read by the recovery.
const (
	taskFieldTaskID  = 1
	taskFieldRunID   = 2
	taskFieldNodeID  = 3
	taskFieldAttempt = 6
	taskFieldToken   = 7

	engineFieldTask         = 1
	engineFieldCancellation = 2
)

// recoverTaskIdentity reads the task id, run id, node id, attempt and
// execution token from the top level of an ExecutionTask that failed to
// decode, skipping every other field without decoding it. It returns what
// it found before the first field it could not read.
func recoverTaskIdentity(data []byte) domain.Task {
	var task domain.Task
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return task
		}
		data = data[n:]
		switch {
		case typ == protowire.BytesType && (num == taskFieldTaskID || num == taskFieldRunID || num == taskFieldNodeID || num == taskFieldToken):
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return task
			}
			switch num {
			case taskFieldTaskID:
				task.TaskID = string(v)
			case taskFieldRunID:
				task.RunID = string(v)
			case taskFieldNodeID:
				task.NodeID = string(v)
			case taskFieldToken:
				task.ExecutionToken = string(v)
			}
			data = data[n:]
		case typ == protowire.VarintType && num == taskFieldAttempt:
			v, n := protowire.ConsumeVarint(data)
			if n < 0 {
				return task
			}
			task.Attempt = int(int32(v)) // int32 on the wire, as proto decodes it
			data = data[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, data)
			if n < 0 {
				return task
			}
			data = data[n:]
		}
	}
	return task
}

// engineMessage is an EngineMessage frame, decoded: the task (or what could
// be recovered of it, with malformed saying why), or the cancellation, or
// neither (a configuration update, or a message of a newer protocol).
type engineMessage struct {
	task         *domain.Task
	malformed    error
	cancellation *gamelanv1.TaskCancellation
}

// decodeEngineMessage decodes an EngineMessage frame. A message that cannot
// be decoded is taken for the task it most likely carries: its task field
// is recovered as decodeTask recovers a task.
func decodeEngineMessage(data []byte) (engineMessage, error) {
	var msg gamelanv1.EngineMessage
	if err := proto.Unmarshal(data, &msg); err != nil {
		return recoverEngineMessage(data, err)
	}
	switch m := msg.GetMessage().(type) {
	case *gamelanv1.EngineMessage_Task:
		task := taskFromProto(m.Task)
		return engineMessage{task: &task}, nil
	case *gamelanv1.EngineMessage_Cancellation:
		return engineMessage{cancellation: m.Cancellation}, nil
	}
	return engineMessage{}, nil
}

// recoverEngineMessage finds the task field of an EngineMessage that failed
// to decode with decodeErr, and recovers the task's identity from it.
func recoverEngineMessage(data []byte, decodeErr error) (engineMessage, error) {
	undecodable := errors.Join(errors.New("undecodable message from the engine"), decodeErr)
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return engineMessage{}, undecodable
		}
		data = data[n:]
		if num == engineFieldTask && typ == protowire.BytesType {
			inner, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return engineMessage{}, undecodable
			}
			task := recoverTaskIdentity(inner)
			return engineMessage{task: &task, malformed: fmt.Errorf("the task could not be decoded: %w", decodeErr)}, nil
		}
		if num == engineFieldCancellation {
			return engineMessage{}, undecodable // a cancellation that cannot be decoded names nothing usable
		}
		if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
			return engineMessage{}, undecodable
		}
		data = data[n:]
	}
	return engineMessage{}, undecodable
}
