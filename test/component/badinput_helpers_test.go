package component

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// The helpers of the bad-input tables (badinput_*_test.go): one table of
// hostile inputs per intake, each row saying what the engine must be told,
// followed by a valid task that must still get the right answer, with the
// service's log lines for the row checked against a bound.

// badMaxLogLine bounds every log line the service writes about a row, even
// for a row carrying a megabyte: values from outside are clipped in logs.
const badMaxLogLine = 8 << 10

// badMaxRowLogs bounds all the log lines written for one row and its
// sentinel together.
const badMaxRowLogs = 64 << 10

// badLogMark returns how many log lines the service has written so far, to
// check the lines of one row with badCheckLogs.
func badLogMark(l *logLines) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.raw)
}

// badCheckLogs asserts that every log line written since mark is one JSON
// object (a value with a newline cannot forge a line) shorter than
// badMaxLogLine, and that together they stay under badMaxRowLogs.
func badCheckLogs(t *testing.T, l *logLines, mark int, row string) {
	t.Helper()
	l.mu.Lock()
	lines := append([]string(nil), l.raw[mark:]...)
	l.mu.Unlock()
	total := 0
	for _, line := range lines {
		total += len(line)
		assert.Less(t, len(line), badMaxLogLine, "%s: a log line of %d bytes: %.300s", row, len(line), line)
		assert.True(t, json.Valid([]byte(line)), "%s: a log line that is not JSON: %.300q", row, line)
	}
	assert.Less(t, total, badMaxRowLogs, "%s: %d log lines of %d bytes in all", row, len(lines), total)
}

// badNestedJSON returns depth JSON objects nested in one another around
// leaf: {"a":{"a":...leaf...}}.
func badNestedJSON(depth int, leaf string) string {
	return strings.Repeat(`{"a":`, depth) + leaf + strings.Repeat("}", depth)
}

// Byte sequences that are not UTF-8: a lone continuation byte, a truncated
// two-byte sequence, and an encoded surrogate.
const (
	badLoneByte  = "\xff"
	badTruncated = "\xc3("
	badSurrogate = "\xed\xa0\x80"
)

// badRepeat returns n copies of c: an id or value of exactly n bytes.
func badRepeat(c string, n int) string { return strings.Repeat(c, n) }

// badMarshal encodes m deterministically; it fails the test when m cannot
// be encoded (protobuf refuses strings that are not UTF-8: rows that need
// them append raw fields with badString).
func badMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	return raw
}

// badString appends field num holding the bytes of v. Appended after a
// message's own encoding, it replaces a scalar field (the last one read
// wins) and merges into a message field, whatever v holds: protobuf's
// encoder would refuse v that is not UTF-8, the wire does not.
func badString(raw []byte, num protowire.Number, v string) []byte {
	raw = protowire.AppendTag(raw, num, protowire.BytesType)
	return protowire.AppendString(raw, v)
}

// badVarint appends field num as a varint.
func badVarint(raw []byte, num protowire.Number, v uint64) []byte {
	raw = protowire.AppendTag(raw, num, protowire.VarintType)
	return protowire.AppendVarint(raw, v)
}

// badStructEntry encodes a google.protobuf.Struct holding one entry, key,
// whose Value is the string value (field 3 of Value): map entries are
// messages of key (1) and value (2), in Struct's field 1.
func badStructEntry(key, value string) string {
	v := badString(nil, 3, value)
	entry := badString(badString(nil, 1, key), 2, string(v))
	return string(badString(nil, 1, string(entry)))
}

// badDeepStruct encodes the google.protobuf.Struct {"a":{"a":...{"a":1}}},
// depth levels deep, as nestedStruct(depth) encodes, in time linear in the
// depth: protobuf's encoder sizes the map entries of every level again at
// each level above it, which takes seconds for 10,000 levels under the
// race detector. Concatenated with another Struct's encoding, it adds its
// entry to that Struct.
func badDeepStruct(depth int) []byte {
	// Value.number_value (field 2, a double) 1: the innermost value.
	leaf := protowire.AppendFixed64(protowire.AppendTag(nil, 2, protowire.Fixed64Type), math.Float64bits(1))
	// structs[k] is the size of the Struct of level k (0 outermost);
	// values[k] the size of the Value in its one entry.
	structs, values := make([]int, depth), make([]int, depth)
	values[depth-1] = len(leaf)
	for k := depth - 1; k >= 0; k-- {
		structs[k] = 1 + protowire.SizeBytes(badEntrySize(values[k]))
		if k > 0 {
			values[k-1] = 1 + protowire.SizeBytes(structs[k]) // Value.struct_value (field 5)
		}
	}
	out := make([]byte, 0, structs[0])
	for k := range depth {
		out = protowire.AppendVarint(protowire.AppendTag(out, 1, protowire.BytesType), uint64(badEntrySize(values[k]))) // Struct.fields
		out = protowire.AppendString(protowire.AppendTag(out, 1, protowire.BytesType), "a")                             // entry key
		out = protowire.AppendVarint(protowire.AppendTag(out, 2, protowire.BytesType), uint64(values[k]))               // entry value
		if k < depth-1 {
			out = protowire.AppendVarint(protowire.AppendTag(out, 5, protowire.BytesType), uint64(structs[k+1]))
		}
	}
	return append(out, leaf...)
}

// badEntrySize is the size of a Struct map entry of key "a" whose Value is
// valueSize bytes.
func badEntrySize(valueSize int) int { return 3 + 1 + protowire.SizeBytes(valueSize) }

// badRawFrames is the engine side of rows whose message must reach the
// executor byte for byte: rows that are not valid protobuf, or not UTF-8.
// Installed as the engine's codec (badRawFrames.codec), it sends the bytes
// registered for a task id in place of the task that carries that id, on
// StreamTasks as an ExecutionTask and on ExecuteStream inside an
// EngineMessage; every other message is plain protobuf.
type badRawFrames struct {
	mu  sync.Mutex
	raw map[string][]byte // task id of the placeholder -> the bytes sent for it
}

func newBadRawFrames() *badRawFrames { return &badRawFrames{raw: make(map[string][]byte)} }

// put registers raw as what is sent for the task whose id is taskID.
func (f *badRawFrames) put(taskID string, raw []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.raw[taskID] = raw
}

func (f *badRawFrames) lookup(taskID string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw, ok := f.raw[taskID]
	return raw, ok
}

// codec returns the engine's codec.
func (f *badRawFrames) codec() encoding.CodecV2 { return badEngineCodec{frames: f} }

// badProtoCodec is grpc-go's protobuf codec, which the bad-input codecs
// fall back on.
var badProtoCodec = encoding.GetCodecV2(protoenc.Name)

// badEngineCodec is the codec of badRawFrames.
type badEngineCodec struct{ frames *badRawFrames }

func (c badEngineCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *gamelanv1.ExecutionTask:
		if raw, ok := c.frames.lookup(m.GetTaskId()); ok {
			return mem.BufferSlice{mem.SliceBuffer(raw)}, nil
		}
	case *gamelanv1.EngineMessage:
		if raw, ok := c.frames.lookup(m.GetTask().GetTaskId()); ok && m.GetTask() != nil {
			return mem.BufferSlice{mem.SliceBuffer(badString(nil, 1, string(raw)))}, nil // EngineMessage.task
		}
	}
	return badProtoCodec.Marshal(v)
}

func (badEngineCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return badProtoCodec.Unmarshal(data, v)
}

// Name is protobuf's: the wire does not change.
func (badEngineCodec) Name() string { return protoenc.Name }

// badRawRequest is a push request as raw bytes, sent with badClientCodec.
type badRawRequest []byte

// badClientCodec sends a badRawRequest byte for byte and decodes the
// answer as protobuf: a hostile engine's push.
type badClientCodec struct{}

func (badClientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if raw, ok := v.(badRawRequest); ok {
		return mem.BufferSlice{mem.SliceBuffer(raw)}, nil
	}
	return badProtoCodec.Marshal(v)
}

func (badClientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return badProtoCodec.Unmarshal(data, v)
}

func (badClientCodec) Name() string { return protoenc.Name }

// badResult is what a row's result must say: its key, and either
// COMPLETED with the tax of amount (code empty) or FAILED with code, its
// message containing contains. token and taskID, when set, must be echoed.
type badResult struct {
	key      string
	code     string
	amount   float64
	contains string
	token    string
	taskID   string
}

// badCompleted is a calculate-tax result COMPLETED for amount.
func badCompleted(key string, amount float64) *badResult {
	return &badResult{key: key, amount: amount}
}

// badFailed is a FAILED result with code, its message containing contains.
func badFailed(key, code, contains string) *badResult {
	return &badResult{key: key, code: code, contains: contains}
}

// withToken returns a copy of w that also checks the echoed token.
func (w badResult) withToken(token string) *badResult {
	w.token = token
	return &w
}

// withTaskID returns a copy of w that also checks the echoed task id.
func (w badResult) withTaskID(taskID string) *badResult {
	w.taskID = taskID
	return &w
}

// badCheckGRPCResult asserts that res, a result received over gRPC, is
// what want says.
func badCheckGRPCResult(t *testing.T, row string, res *gamelanv1.TaskResult, want *badResult) {
	t.Helper()
	if !assert.NotNil(t, res, "%s: no result for %s", row, want.key) {
		return
	}
	assert.Equal(t, want.key, domain.IdempotencyKey(res.GetRunId(), res.GetNodeId(), int(res.GetAttempt())), row)
	assert.NotNil(t, res.GetCompletedAt(), "%s: completed_at", row)
	if want.token != "" {
		assert.Equal(t, want.token, res.GetExecutionToken(), "%s: token", row)
	}
	if want.taskID != "" {
		assert.Equal(t, want.taskID, res.GetTaskId(), "%s: task id", row)
	}
	if want.code == "" {
		assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, res.GetStatus(), "%s: %.300v", row, res.GetError())
		assert.InDelta(t, want.amount*0.1, res.GetOutput().AsMap()["tax"], 1e-9, "%s: tax", row)
		return
	}
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_FAILED, res.GetStatus(), row)
	assert.Equal(t, want.code, res.GetError().GetCode(), "%s: %.300s", row, res.GetError().GetMessage())
	assert.Contains(t, res.GetError().GetMessage(), want.contains, row)
	assert.LessOrEqual(t, len(res.GetError().GetMessage()), domain.MaxErrorMessageBytes+64, "%s: the error message is bounded", row)
}

// badManyVars is the size of a table's huge variable map: short by
// default, under the race detector on a shared machine, and long in the
// long variants (testkit.Long).
func badManyVars(short, long int) int { return testkit.Pick(short, long) }

// badKey is the result key of a task: runId:nodeId:attempt.
func badKey(run, node string, attempt int) string { return domain.IdempotencyKey(run, node, attempt) }

// badSentinelAmount is the amount of the valid task that follows row i:
// different for every row, so that a sentinel answered with another's
// result shows.
func badSentinelAmount(i int) float64 { return float64(i)*2.5 + 0.75 }

// badSentinelNode is the node id of the valid task that follows row i.
func badSentinelNode(i int) string { return fmt.Sprintf("sentinel-%02d", i) }

// badPushRequest is a valid calculate-tax push request of run for node,
// without a signature (the executor id is a hint; tests that host two
// types add it).
func badPushRequest(run, node, amount string) *dispatcherpb.ExecutionRequest {
	return &dispatcherpb.ExecutionRequest{
		RunId: run, NodeId: node, Attempt: 1, Token: "token-" + node,
		Variables: map[string]string{"amount": amount},
	}
}
