package kafka

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gamelan-go/executor/internal/domain"
)

// fuzzMaxBytes is the record size limit of the fuzz target: small, so that
// the fuzzer reaches the size check, and above every seed of the corpus.
const fuzzMaxBytes = 4 << 10

// maxDecodeErrorBytes bounds the text of a decoding error. The error is
// logged and answered in a result; it must not grow with the record (a
// record may be a megabyte of digits).
const maxDecodeErrorBytes = 512

// FuzzDecodeTask feeds arbitrary record values to the Kafka task decoder.
// The seed corpus (testdata/fuzz/FuzzDecodeTask) holds the protocol's
// TaskMessage examples and hostile values: truncated, wrong types, huge
// numbers, deep nesting, invalid UTF-8, NULs, trailing data.
//
// Whatever the value, decodeTask either
//   - fails with an error wrapping errMalformed, short and bounded, and a
//     task holding only an identity the value really carries, or
//   - succeeds on a single JSON object with a run id, a node id and a whole
//     attempt, and the task it yields round-trips: encoded back as a
//     TaskMessage and decoded again, it is the same task.
func FuzzDecodeTask(f *testing.F) {
	f.Add([]byte(`{"runId":"r-1","nodeId":"n-1","attempt":1,"token":"tok","context":{"amount":100.5}}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		task, err := decodeTask(value, fuzzMaxBytes)
		if err != nil {
			checkMalformed(t, value, task, err)
			return
		}
		if len(value) > fuzzMaxBytes || !utf8.Valid(value) {
			t.Fatalf("a value of %d bytes (valid UTF-8: %v) was decoded", len(value), utf8.Valid(value))
		}
		if !json.Valid(value) {
			t.Fatalf("decoded a value that is not one JSON value: %q", clipBytes(value))
		}
		if task.RunID == "" || task.NodeID == "" || task.Attempt == attemptUnknown {
			t.Fatalf("decoded without run id, node id or attempt: %+v", task)
		}
		if task.Validate() == nil && !task.Addressable() {
			t.Fatalf("a valid task is not addressable: %+v", task)
		}
		checkNoJSONNumbers(t, task.Context)

		// decode(encode(decode(x))) == decode(x)
		again, err := decodeTask(encodeTaskMessage(t, task), math.MaxInt)
		if err != nil {
			t.Fatalf("the decoded task, encoded again, does not decode: %v\ntask: %+v", err, task)
		}
		requireSameTask(t, task, again)
	})
}

// checkMalformed checks the outcome of a value decodeTask refused.
func checkMalformed(t *testing.T, value []byte, task domain.Task, err error) {
	t.Helper()
	if !errors.Is(err, errMalformed) {
		t.Fatalf("error does not wrap errMalformed: %v", err)
	}
	msg := err.Error()
	if len(msg) > maxDecodeErrorBytes {
		t.Fatalf("error of %d bytes, more than %d: %.200q...", len(msg), maxDecodeErrorBytes, msg)
	}
	if msg == errMalformed.Error() || !strings.HasPrefix(msg, errMalformed.Error()+": ") {
		t.Fatalf("error does not say why: %q", msg)
	}
	// What identity there is comes from the value itself: a recovered run
	// id, node id, token, task id or target is a string the value holds.
	for name, field := range map[string]string{"runId": task.RunID, "nodeId": task.NodeID, "token": task.ExecutionToken,
		"taskId": task.TaskID, "targetExecutor": task.ExecutorID} {
		if field != "" && !containsJSONString(value, field) {
			t.Fatalf("recovered %s %q that the value does not hold", name, clip(field))
		}
	}
	if task.Attempt != attemptUnknown && !holdsAttempt(value) {
		t.Fatalf("recovered attempt %d from a value without one", task.Attempt)
	}
}

// holdsAttempt reports whether the value has an attempt key at its top
// level, as encoding/json matches keys (escapes decoded, case folded),
// among the members before its first fault: the decoder recovers an
// identity member by member, so a value cut off after its attempt still
// holds one.
func holdsAttempt(value []byte) bool {
	for _, m := range membersBeforeFault(value) {
		if strings.EqualFold(m.key, "attempt") {
			return true
		}
	}
	return false
}

// containsJSONString reports whether the value holds s as a JSON string,
// either literally (bytes that are not UTF-8 read as U+FFFD, as the
// decoder reads them) or as encoding/json decodes it, in a member before
// the value's first fault.
func containsJSONString(value []byte, s string) bool {
	repaired := strings.ToValidUTF8(string(value), "\uFFFD")
	if strings.Contains(repaired, s) {
		return true
	}
	// Escapes (\u0041, \n, ...) decode to text the raw bytes do not hold:
	// fall back to a walk of every string of those members.
	for _, m := range membersBeforeFault(value) {
		var doc any
		if m.key == s || (json.Unmarshal(m.raw, &doc) == nil && holdsString(doc, s)) {
			return true
		}
	}
	return false
}

type member struct {
	key string
	raw json.RawMessage
}

// membersBeforeFault returns the top-level members of a JSON object value
// that come before its first fault (the end of a cut-off value, a syntax
// error), bytes that are not UTF-8 read as U+FFFD.
func membersBeforeFault(value []byte) []member {
	dec := json.NewDecoder(strings.NewReader(strings.ToValidUTF8(string(value), "\uFFFD")))
	if open, err := dec.Token(); err != nil || open != json.Delim('{') {
		return nil
	}
	var members []member
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return members
		}
		k, _ := key.(string)
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return members
		}
		members = append(members, member{key: k, raw: raw})
	}
	return members
}

func holdsString(v any, s string) bool {
	switch x := v.(type) {
	case string:
		return x == s
	case map[string]any:
		for k, e := range x {
			if k == s || holdsString(e, s) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if holdsString(e, s) {
				return true
			}
		}
	}
	return false
}

// checkNoJSONNumbers fails if a json.Number reached the context: handlers
// are promised float64 (or, beyond float64's range, the number's text).
func checkNoJSONNumbers(t *testing.T, v any) {
	t.Helper()
	switch x := v.(type) {
	case json.Number:
		t.Fatalf("a json.Number %q reached the context", x)
	case map[string]any:
		for _, e := range x {
			checkNoJSONNumbers(t, e)
		}
	case []any:
		for _, e := range x {
			checkNoJSONNumbers(t, e)
		}
	}
}

// encodeTaskMessage writes a decoded task back as the TaskMessage an engine
// would send for it.
func encodeTaskMessage(t *testing.T, task domain.Task) []byte {
	t.Helper()
	msg := TaskMessage{
		RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt, Token: task.ExecutionToken,
		Context: task.Context, TargetExecutor: task.ExecutorID, TaskID: task.TaskID, NodeType: task.NodeType,
		ExecutorType: task.ExecutorType, TimeoutSeconds: int64(task.Timeout / time.Second), IdempotencyKey: task.IdempotencyKey,
	}
	if !task.ScheduledAt.IsZero() {
		msg.ScheduledAt = &task.ScheduledAt
	}
	raw, err := json.Marshal(msg)
	if err != nil {
		t.Fatalf("a decoded task cannot be encoded again: %v\ntask: %+v", err, task)
	}
	return raw
}

// requireSameTask compares two decoded tasks: times by instant, and an
// empty context like none (omitempty drops it).
func requireSameTask(t *testing.T, want, got domain.Task) {
	t.Helper()
	if !want.ScheduledAt.Equal(got.ScheduledAt) {
		t.Fatalf("scheduledAt %v became %v", want.ScheduledAt, got.ScheduledAt)
	}
	want.ScheduledAt, got.ScheduledAt = time.Time{}, time.Time{}
	if len(want.Context) == 0 && len(got.Context) == 0 {
		want.Context, got.Context = nil, nil
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("the task changed through encode and decode:\nfirst:  %+v\nsecond: %+v", want, got)
	}
}

func clip(s string) string { return domain.Clip(s, 200) }

func clipBytes(b []byte) string { return clip(string(b)) }
