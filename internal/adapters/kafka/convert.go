package kafka

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/domain"
)

// errMalformed marks a task record that cannot be taken as it is.
var errMalformed = errors.New("malformed task record")

// maxReasonBytes bounds the decoder's own words in a malformed record's
// error: encoding/json quotes a number it cannot store whole, and a record
// may be a megabyte of digits, while the error is logged and answered.
const maxReasonBytes = 256

// attemptUnknown is the attempt of a record whose attempt is missing or not
// a whole number: no result can name such a task (domain.Task.Addressable
// is false), so it is never answered with a guessed attempt.
const attemptUnknown = math.MinInt64

// taskRecord is a TaskMessage as decoded: the attempt as a json.Number, so
// that a missing or fractional attempt is told apart from a real one.
type taskRecord struct {
	TaskMessage
	Attempt json.Number `json:"attempt"`
}

// decodeTask decodes a task record. A record that is too large, not UTF-8,
// not one JSON value (with nothing after it), of the wrong shape, or
// without a run id, node id or whole attempt comes back with an error
// wrapping errMalformed and the identity found in it (recoverIdentity's,
// or the decoded fields'), so that it can still be answered when that
// identity allows (the runtime decides, see ports.Delivery.Malformed).
func decodeTask(value []byte, maxBytes int) (domain.Task, error) {
	if len(value) > maxBytes {
		return recoverIdentity(value), fmt.Errorf("%w: %d bytes, more than the %d allowed", errMalformed, len(value), maxBytes)
	}
	if !utf8.Valid(value) {
		return recoverIdentity(value), fmt.Errorf("%w: not valid UTF-8", errMalformed)
	}
	var msg taskRecord
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&msg); err != nil {
		return recoverIdentity(value), fmt.Errorf("%w: %s", errMalformed, domain.Clip(err.Error(), maxReasonBytes))
	}
	// A record is one JSON value: whatever follows it (a second task, say)
	// would otherwise be dropped without a word.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return recoverIdentity(value), fmt.Errorf("%w: data after the JSON object", errMalformed)
	}
	task := domain.Task{
		TaskID:         msg.TaskID,
		ExecutorID:     msg.TargetExecutor,
		RunID:          msg.RunID,
		NodeID:         msg.NodeID,
		NodeType:       msg.NodeType,
		ExecutorType:   msg.ExecutorType,
		Attempt:        attemptOf(msg.Attempt),
		ExecutionToken: msg.Token,
		IdempotencyKey: msg.IdempotencyKey,
		Context:        plainNumbers(msg.Context),
		Timeout:        domain.TimeoutFromSeconds(msg.TimeoutSeconds),
	}
	if msg.ScheduledAt != nil {
		task.ScheduledAt = *msg.ScheduledAt
	}
	_, trailing := dec.Token()
	switch {
	case !errors.Is(trailing, io.EOF):
		// One JSON value and nothing after it: a record holding two tasks,
		// or a task followed by garbage, is not a TaskMessage (answered by
		// the first value's identity).
		return task, fmt.Errorf("%w: data after the JSON value", errMalformed)
	case msg.RunID == "" || msg.NodeID == "":
		return task, fmt.Errorf("%w: runId and nodeId are required", errMalformed)
	case task.Attempt == attemptUnknown:
		return task, fmt.Errorf("%w: attempt %s is not a whole number", errMalformed, domain.Quote(msg.Attempt.String()))
	}
	return task, nil
}

// attemptOf reads an attempt, attemptUnknown when it is missing or not a
// whole number.
func attemptOf(n json.Number) int {
	a, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		return attemptUnknown
	}
	return int(a)
}

// plainNumbers turns json.Number values into float64, as handlers expect
// from JSON, recursively. (Numbers are decoded as json.Number only so that
// a large integer does not fail the whole record.)
func plainNumbers(m map[string]any) map[string]any {
	for k, v := range m {
		m[k] = plainValue(v)
	}
	return m
}

func plainValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case map[string]any:
		return plainNumbers(x)
	case []any:
		for i := range x {
			x[i] = plainValue(x[i])
		}
	}
	return v
}

// recoverIdentity reads whatever it can of a malformed record's runId,
// nodeId, attempt, token, taskId and targetExecutor (as ExecutorID), so that
// the engine can be answered, by the executor it addressed. What it cannot
// read stays empty (attemptUnknown for the attempt), which makes the task
// unaddressable. It reads the top-level object token by token, skipping the
// values of other keys without decoding them, so that a record truncated
// after its identity, or nested deeper than the decoder allows in another
// field, still yields the fields before the fault.
func recoverIdentity(value []byte) domain.Task {
	task := domain.Task{Attempt: attemptUnknown}
	if !utf8.Valid(value) {
		value = []byte(strings.ToValidUTF8(string(value), "\uFFFD"))
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return task
	}
	str := func(raw json.RawMessage) string {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
		return ""
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return task
		}
		key, _ := tok.(string)
		switch key {
		case "runId", "nodeId", "token", "taskId", "targetExecutor", "attempt":
		default:
			if skipValue(dec) != nil {
				return task
			}
			continue
		}
		var raw json.RawMessage
		if dec.Decode(&raw) != nil {
			return task
		}
		switch key {
		case "runId":
			task.RunID = str(raw)
		case "nodeId":
			task.NodeID = str(raw)
		case "token":
			task.ExecutionToken = str(raw)
		case "taskId":
			task.TaskID = str(raw)
		case "targetExecutor":
			task.ExecutorID = str(raw)
		case "attempt":
			var n json.Number
			task.Attempt = attemptUnknown
			if json.Unmarshal(raw, &n) == nil {
				task.Attempt = attemptOf(n)
			}
		}
	}
	return task
}

// skipValue reads the next value of dec token by token, at any depth.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// resultMessage converts a result for the results topic.
func resultMessage(r domain.Result) ResultMessage {
	msg := ResultMessage{
		RunID:          r.RunID,
		NodeID:         r.NodeID,
		Attempt:        r.Attempt,
		Status:         string(r.Status),
		Output:         r.Output,
		ExecutionToken: r.ExecutionToken,
		CompletedAt:    r.CompletedAt.UTC(),
		TaskID:         r.TaskID,
		ExecutorID:     r.ExecutorID,
		DurationMs:     r.Duration.Milliseconds(),
	}
	if msg.Output == nil {
		msg.Output = map[string]any{}
	}
	msg.Output = withTraceInOutput(msg.Output, r.Trace)
	if r.CompletedAt.IsZero() {
		msg.CompletedAt = time.Now().UTC()
	}
	if r.Error != nil {
		msg.Error = &ResultError{Code: r.Error.Code, Message: r.Error.Message, Retryable: r.Error.Retryable, Context: r.Error.Context}
		msg.StackTrace = r.Error.StackTrace
	}
	return msg
}

// encodeResult encodes a result; output that JSON cannot hold is replaced
// by a note rather than losing the result.
func encodeResult(r domain.Result) []byte {
	msg := resultMessage(r)
	value, err := json.Marshal(msg)
	if err == nil {
		return value
	}
	msg.Output = map[string]any{"outputError": "output not representable as JSON: " + err.Error()}
	if msg.Error != nil {
		msg.Error.Context = nil
	}
	value, _ = json.Marshal(msg) // only strings and numbers left
	return value
}

// traceFromHeaders reads a task record's trace context from its W3C
// headers (see domain.TraceFromHeaders), the names Kafka instrumentations of
// OpenTelemetry use.
func traceFromHeaders(headers []*sarama.RecordHeader) *domain.TraceContext {
	return domain.TraceFromHeaders(func(name string) []string {
		var values []string
		for _, h := range headers {
			if h != nil && string(h.Key) == name {
				values = append(values, string(h.Value))
			}
		}
		return values
	})
}

// traceHeaders returns the result record headers of a trace context: one
// per non-empty value.
func traceHeaders(tc *domain.TraceContext) []sarama.RecordHeader {
	var headers []sarama.RecordHeader
	tc.Bounded().EachHeader(func(name, value string) {
		headers = append(headers, sarama.RecordHeader{Key: []byte(name), Value: []byte(value)})
	})
	return headers
}

// headersSize is the bytes headers take in a record, framing left aside
// (recordOverhead covers it).
func headersSize(headers []sarama.RecordHeader) int {
	n := 0
	for _, h := range headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// withTraceInOutput returns output with the trace context under the
// reserved keys when the task brought it in its context (an engine that
// sent no headers): the result carries it back the way it came. output is
// copied, never changed: it is the handler's map.
func withTraceInOutput(output map[string]any, tc *domain.TraceContext) map[string]any {
	if !tc.FromContext() {
		return output
	}
	if tc = tc.Bounded(); tc == nil {
		return output
	}
	out := make(map[string]any, len(output)+3)
	for k, v := range output {
		out[k] = v
	}
	tc.EachContextKey(func(key, value string) { out[key] = value })
	return out
}
