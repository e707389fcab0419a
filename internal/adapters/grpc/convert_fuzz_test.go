package grpc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// The fuzz targets of the gRPC conversions: frames from the engine's
// streams (ExecutionTask, EngineMessage), push requests, and the
// protobuf Struct <-> map conversion both ways. Seed corpora are under
// testdata/fuzz/<target>.

// maxFrameErrorBytes bounds the error of an undecodable frame: it is
// answered in a result and logged.
const maxFrameErrorBytes = 512

// FuzzDecodeTaskFrame feeds arbitrary bytes to the decoder of
// ExecutionTask frames (StreamTasks), followed, when depth is not 0, by a
// context nested depth levels (up to maxFuzzDepth, beyond the decoder's
// recursion limit): deep frames come from a small input, so that the
// fuzzer spends its time mutating rather than minimizing large ones. A
// frame either decodes, and then
//   - the identity the recovery reads from the raw bytes is the decoder's
//     (the two readers agree on every frame both can read), and
//   - the task round-trips: converted back by the engine side's
//     taskToProto, encoded and decoded again, it is the same task;
//
// or it does not, and then the error is bounded and says so, and the
// identity recovered is made of bytes the frame holds.
func FuzzDecodeTaskFrame(f *testing.F) {
	f.Add(mustMarshal(f, &gamelanv1.ExecutionTask{TaskId: "t-1", RunId: "r-1", NodeId: "n-1", Attempt: 1}), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, depth uint16) {
		if depth %= maxFuzzDepth; depth > 0 {
			// A message field that comes twice is merged: the deep context
			// joins whatever context the frame has.
			data = append(slices.Clip(data), mustMarshal(t, &gamelanv1.ExecutionTask{Context: deepStruct(int(depth))})...)
		}
		task, malformed := decodeTask(data)
		if malformed != nil {
			checkUndecodable(t, data, task, malformed)
			return
		}
		recovered := recoverTaskIdentity(data)
		if recovered.TaskID != task.TaskID || recovered.RunID != task.RunID || recovered.NodeID != task.NodeID ||
			recovered.Attempt != task.Attempt || recovered.ExecutionToken != task.ExecutionToken {
			t.Fatalf("the recovery reads another identity than the decoder:\ndecoded:   %s\nrecovered: %s", identity(task), identity(recovered))
		}
		if task.Attempt < math.MinInt32 || task.Attempt > math.MaxInt32 {
			t.Fatalf("attempt %d does not fit the wire's int32", task.Attempt)
		}
		again := roundTripTask(t, task)
		requireSameDecodedTask(t, task, again)
	})
}

// maxFuzzDepth bounds the nesting FuzzDecodeTaskFrame adds: beyond the
// protobuf decoder's recursion limit (10 000 messages, three per level).
const maxFuzzDepth = 4000

// FuzzDecodeEngineMessage feeds arbitrary bytes to the decoder of
// EngineMessage frames (ExecuteStream). A message is a task, a
// cancellation, or neither, never both; an undecodable one is an error
// and nothing else, unless it is a task whose identity could be
// recovered, offered as malformed; a decoded task round-trips.
func FuzzDecodeEngineMessage(f *testing.F) {
	f.Add(mustMarshal(f, &gamelanv1.EngineMessage{Message: &gamelanv1.EngineMessage_Cancellation{
		Cancellation: &gamelanv1.TaskCancellation{TaskId: "t-1", Reason: "stop"}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := decodeEngineMessage(data)
		if err != nil {
			if msg.task != nil || msg.cancellation != nil || msg.malformed != nil {
				t.Fatalf("an undecodable message (%v) came with content: %+v", err, msg)
			}
			if !strings.Contains(err.Error(), "undecodable") || len(err.Error()) > maxFrameErrorBytes {
				t.Fatalf("error does not say the message is undecodable, in a few words: %.200q", err.Error())
			}
			return
		}
		if msg.task != nil && msg.cancellation != nil {
			t.Fatalf("a message that is both a task and a cancellation: %+v", msg)
		}
		switch {
		case msg.task != nil && msg.malformed != nil:
			checkUndecodable(t, data, *msg.task, msg.malformed)
		case msg.task != nil:
			again := roundTripTask(t, *msg.task)
			requireSameDecodedTask(t, *msg.task, again)
		case msg.malformed != nil:
			t.Fatalf("malformed set without a task: %v", msg.malformed)
		}
	})
}

// FuzzPushRequest feeds arbitrary bytes, as an ExecutionRequest, to the
// push conversion, and a run id and executor id to the engine's
// signature. A request the protobuf decoder takes becomes a task that
// carries its ids as sent and its variables as strings, key for key, with
// an executor id only when the signature names a valid one after the run
// id; and the signature the engine makes for a valid executor id always
// gives that id back.
func FuzzPushRequest(f *testing.F) {
	f.Add(mustMarshal(f, &dispatcherpb.ExecutionRequest{RunId: "r-1", NodeId: "n-1", Attempt: 1,
		Variables: map[string]string{"amount": "250"}, Signature: grpcengine.Signature("r-1", "executor-x")}), "r-1", "executor-x")
	f.Fuzz(func(t *testing.T, data []byte, runID, executorID string) {
		// The engine's signature, decoded as a push request is.
		req := &dispatcherpb.ExecutionRequest{RunId: runID, Signature: grpcengine.Signature(runID, executorID)}
		want := ""
		if domain.ValidID(executorID) {
			want = executorID
		}
		if got := taskFromRequest(t.Context(), req); got.ExecutorID != want {
			t.Fatalf("the signature of run %q for executor %q gave executor %q", runID, executorID, got.ExecutorID)
		}

		var pushed dispatcherpb.ExecutionRequest
		if proto.Unmarshal(data, &pushed) != nil {
			return // refused by gRPC itself before the push server sees it
		}
		task := taskFromRequest(t.Context(), &pushed)
		if task.RunID != pushed.GetRunId() || task.NodeID != pushed.GetNodeId() || task.Attempt != int(pushed.GetAttempt()) ||
			task.ExecutionToken != pushed.GetToken() || task.IdempotencyKey != pushed.GetIdempotencyKey() {
			t.Fatalf("the task's ids are not the request's: %s", identity(task))
		}
		if task.TaskID != "" || task.Timeout != 0 || task.NodeType != "" || task.Configuration != nil {
			t.Fatalf("a push has no task id, timeout, node type or configuration, yet: %+v", task)
		}
		if len(task.Context) != len(pushed.GetVariables()) {
			t.Fatalf("%d variables became %d context entries", len(pushed.GetVariables()), len(task.Context))
		}
		for k, v := range pushed.GetVariables() {
			if s, ok := task.Context[k].(string); !ok || s != v {
				t.Fatalf("variable %q = %q became %#v", k, v, task.Context[k])
			}
		}
		if task.ExecutorID != "" {
			raw, err := base64.StdEncoding.DecodeString(pushed.GetSignature())
			if err != nil || !domain.ValidID(task.ExecutorID) || string(raw) != pushed.GetRunId()+task.ExecutorID {
				t.Fatalf("executor id %q is not what the signature names after the run id", task.ExecutorID)
			}
		}
	})
}

// FuzzStructConversion converts maps built from arbitrary JSON, strings
// (invalid UTF-8 included) and numbers (NaN, infinities) to protobuf
// Structs and back, the way results go to the engine: toStruct succeeds
// whenever the map is representable (as itself, or through JSON), fails
// only when JSON cannot hold it either, and what comes back is the map as
// Struct (or JSON) carries it; a result carrying the map as output and as
// error context reaches the engine side's resultFromProto intact.
func FuzzStructConversion(f *testing.F) {
	f.Add([]byte(`{"amount":12.5,"lines":[1,"two",{"sku":"X"}],"ok":true,"none":null}`), "key", "value", 1.5)
	f.Fuzz(func(t *testing.T, doc []byte, key, text string, number float64) {
		m := map[string]any{}
		if json.Unmarshal(doc, &m) != nil || m == nil {
			m = map[string]any{}
		}
		m[key] = []any{text, number, map[string]any{text: number}, 7, int64(-8), float32(0.5), nil}

		want, representable := structView(m)
		s, err := toStruct(m)
		switch {
		case !representable && err == nil:
			t.Fatalf("toStruct took a map JSON cannot hold either")
		case representable && err != nil:
			t.Fatalf("toStruct failed on a representable map: %v", err)
		case err != nil:
			if note := structOrNote(m); note == nil || !strings.Contains(note.AsMap()["outputError"].(string), "not representable") {
				t.Fatalf("structOrNote gave no note for a map it cannot convert: %v", note)
			}
			return
		}
		if got := s.AsMap(); !sameValue(got, want) {
			t.Fatalf("the map changed through Struct:\nwant %#v\ngot  %#v", want, got)
		}

		// A result with the map as output and error context, as the
		// engine side reads it off the wire.
		r := domain.Result{RunID: "r", NodeID: "n", Attempt: 1, Status: domain.StatusFailed, Output: m,
			CompletedAt: time.Unix(1, 0).UTC(),
			Error:       &domain.ErrorInfo{Code: "X", Message: text, Context: m, Retryable: number > 0}}
		wire, err := proto.Marshal(resultToProto(r))
		if err != nil {
			t.Fatalf("a converted result does not encode: %v", err)
		}
		var pr gamelanv1.TaskResult
		if err := proto.Unmarshal(wire, &pr); err != nil {
			t.Fatalf("a converted result does not decode: %v", err)
		}
		back := resultFromProto(&pr)
		if !sameValue(back.Output, want) {
			t.Fatalf("output changed on the way to the engine:\nwant %#v\ngot  %#v", want, back.Output)
		}
		// The wire's ErrorInfo has no retryable field: it travels as the
		// context's "retryable" entry, which takes that key's place.
		wantContext := want.(map[string]any)
		delete(wantContext, retryableKey)
		if len(wantContext) == 0 {
			wantContext = nil
		}
		if back.Error == nil || back.Error.Retryable != r.Error.Retryable || !sameValue(mapOrNil(back.Error.Context), mapOrNil(wantContext)) ||
			back.Error.Message != strings.ToValidUTF8(text, "\uFFFD") {
			t.Fatalf("error changed on the way to the engine:\nsent %+v\ngot  %+v", r.Error, back.Error)
		}
	})
}

// structView is what a Struct holds of m: m itself with numbers as
// float64 when Struct takes m as it is, else m as JSON carries it; false
// when JSON cannot hold it either.
func structView(m map[string]any) (any, bool) {
	if v, ok := asStructValue(m); ok {
		return v, true
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, false
	}
	var out any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, false
	}
	return out, true
}

// asStructValue converts v as structpb.NewValue does, false when it
// refuses a value (invalid UTF-8 in a key or a string).
func asStructValue(v any) (any, bool) {
	switch x := v.(type) {
	case nil, bool:
		return x, true
	case string:
		return x, utf8Valid(x)
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float32:
		return asStructValue(float64(x))
	case float64:
		// Struct holds them as numbers, and AsMap gives them back as
		// the strings JSON writes them as.
		switch {
		case math.IsNaN(x):
			return "NaN", true
		case math.IsInf(x, 1):
			return "Infinity", true
		case math.IsInf(x, -1):
			return "-Infinity", true
		}
		return x, true
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			var ok bool
			if out[i], ok = asStructValue(e); !ok {
				return nil, false
			}
		}
		return out, true
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, ok := asStructValue(e)
			if !ok || !utf8Valid(k) {
				return nil, false
			}
			out[k] = c
		}
		return out, true
	}
	return nil, false
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func mapOrNil(m map[string]any) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

// sameValue compares two Struct-shaped values; NaN equals NaN.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && (x == y || math.IsNaN(x) && math.IsNaN(y))
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, e := range x {
			f, ok := y[k]
			if !ok || !sameValue(e, f) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !sameValue(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// checkUndecodable checks a frame the decoder refused.
func checkUndecodable(t *testing.T, data []byte, task domain.Task, malformed error) {
	t.Helper()
	msg := malformed.Error()
	if !strings.Contains(msg, "could not be decoded") || len(msg) > maxFrameErrorBytes {
		t.Fatalf("the error does not say the task could not be decoded, in a few words: %.200q", msg)
	}
	for name, field := range map[string]string{"task id": task.TaskID, "run id": task.RunID, "node id": task.NodeID, "token": task.ExecutionToken} {
		if field != "" && !bytes.Contains(data, []byte(field)) {
			t.Fatalf("recovered a %s the frame does not hold: %q", name, domain.Clip(field, 100))
		}
	}
	if task.Context != nil || task.Configuration != nil || task.NodeType != "" {
		t.Fatalf("an undecodable task kept more than its identity: %+v", task)
	}
}

// roundTripTask sends a decoded task back through the engine side's
// conversion and the wire, and decodes it again.
func roundTripTask(t *testing.T, task domain.Task) domain.Task {
	t.Helper()
	pt, err := taskToProto(task)
	if err != nil {
		t.Fatalf("a decoded task cannot be converted back: %v\ntask: %+v", err, task)
	}
	data, err := proto.Marshal(pt)
	if err != nil {
		t.Fatalf("a decoded task cannot be encoded again: %v", err)
	}
	again, malformed := decodeTask(data)
	if malformed != nil {
		t.Fatalf("a decoded task, encoded again, does not decode: %v", malformed)
	}
	return again
}

// requireSameDecodedTask compares two decoded tasks: contexts and
// configurations as Struct values (NaN equal to NaN, empty like none),
// times by instant.
func requireSameDecodedTask(t *testing.T, want, got domain.Task) {
	t.Helper()
	if !sameValue(mapOrNil(want.Context), mapOrNil(got.Context)) || !sameValue(mapOrNil(want.Configuration), mapOrNil(got.Configuration)) {
		t.Fatalf("context or configuration changed:\nfirst:  %#v %#v\nsecond: %#v %#v", want.Context, want.Configuration, got.Context, got.Configuration)
	}
	if !want.ScheduledAt.Equal(got.ScheduledAt) {
		t.Fatalf("scheduled time %v became %v", want.ScheduledAt, got.ScheduledAt)
	}
	want.Context, want.Configuration, got.Context, got.Configuration = nil, nil, nil, nil
	want.ScheduledAt, got.ScheduledAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("the task changed:\nfirst:  %+v\nsecond: %+v", want, got)
	}
}

func identity(task domain.Task) string {
	return fmt.Sprintf("task id %s, run id %s, node id %s, token %s, attempt %d",
		domain.Quote(task.TaskID), domain.Quote(task.RunID), domain.Quote(task.NodeID), domain.Quote(task.ExecutionToken), task.Attempt)
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}
