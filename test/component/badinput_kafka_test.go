package component

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/test/testkit"
)

// badKafkaRun is the run id of the Kafka table's tasks.
const badKafkaRun = "run-bad-kafka"

// badKafkaMaxRecord is KAFKA_MAX_MESSAGE_BYTES in the Kafka table: small,
// so that records at and beyond it are cheap.
const badKafkaMaxRecord = 128 << 10

// badKafkaRow is one hostile record on the tasks topic (its key and
// headers when given) and the result the engine must get, or none when no
// result can name it or it targets another executor (docs/protocol.md
// 4.3: skipped, logged, committed).
type badKafkaRow struct {
	name    string
	key     []byte
	value   []byte
	headers []kafkatest.Header
	result  *badResult
}

// badJSONField is one member of a JSON object, its value raw JSON; in
// badKafkaRecord's edits an empty raw value removes the member.
type badJSONField struct{ key, raw string }

// badKafkaRecord is the text of a calculate-tax task record for node in
// Gamelan's shape, its members edited: an edit replaces the member of its
// key (in place) or adds one (at the end).
func badKafkaRecord(node string, edits ...badJSONField) string {
	fields := []badJSONField{
		{"runId", `"` + badKafkaRun + `"`}, {"nodeId", `"` + node + `"`}, {"attempt", "1"},
		{"token", `"token-` + node + `"`}, {"targetExecutor", `"` + kafkaTaxExecutorID + `"`}, {"context", `{"amount":10}`},
	}
	for _, e := range edits {
		replaced := false
		for i := range fields {
			if fields[i].key == e.key {
				fields[i].raw, replaced = e.raw, true
			}
		}
		if !replaced {
			fields = append(fields, e)
		}
	}
	var members []string
	for _, f := range fields {
		if f.raw != "" {
			members = append(members, `"`+f.key+`":`+f.raw)
		}
	}
	return "{" + strings.Join(members, ",") + "}"
}

func badKafkaRows() []badKafkaRow {
	rec := func(node string, edits ...badJSONField) []byte { return []byte(badKafkaRecord(node, edits...)) }
	f := func(key, raw string) badJSONField { return badJSONField{key, raw} }
	key := func(node string) string { return badKey(badKafkaRun, node, 1) }
	skipped := func(name string, value []byte) badKafkaRow { return badKafkaRow{name: name, value: value} }
	answered := func(name string, value []byte, result *badResult) badKafkaRow {
		return badKafkaRow{name: name, value: value, result: result}
	}
	invalidTask := func(node string, attempt int, contains string) *badResult {
		return badFailed(badKey(badKafkaRun, node, attempt), domain.CodeInvalidTask, contains).withToken("token-" + node)
	}
	invalidInput := func(node string) *badResult { return badFailed(key(node), domain.CodeInvalidInput, "amount") }
	amount := func(node, raw string) []byte { return rec(node, f("context", `{"amount":`+raw+`}`)) }

	// A record of exactly n bytes: the task, its context padded.
	sized := func(node string, n int) []byte {
		short := len(badKafkaRecord(node, f("context", `{"amount":10,"pad":""}`)))
		return rec(node, f("context", `{"amount":10,"pad":"`+badRepeat("p", n-short)+`"}`))
	}
	manyVars := []string{`"amount":12`}
	for i := range 5000 {
		manyVars = append(manyVars, fmt.Sprintf(`"v%04d":"x"`, i))
	}

	return []badKafkaRow{
		// Malformed.
		skipped("not JSON", []byte("\x00\x01 not json")),
		skipped("JSON array", []byte("["+badKafkaRecord("array-record")+"]")),
		skipped("JSON string", []byte(`"a task"`)),
		skipped("JSON null", []byte("null")),
		skipped("empty value", []byte{}),
		skipped("tombstone", nil),
		skipped("object of another shape", []byte(`{"task":{"runId":"`+badKafkaRun+`","nodeId":"other-shape","attempt":1}}`)),
		answered("truncated after its identity", rec("truncated")[:len(rec("truncated"))-4], invalidTask("truncated", 1, "unexpected EOF")),
		answered("a second task after the first", append(rec("first-of-two"), rec("second-of-two")...),
			invalidTask("first-of-two", 1, "data after the JSON object")),
		answered("context an array", rec("context-array", f("context", "[1,2]")), invalidTask("context-array", 1, "cannot unmarshal")),
		answered("context a string", rec("context-string", f("context", `"amount=10"`)), invalidTask("context-string", 1, "cannot unmarshal")),

		// Missing fields.
		skipped("no runId", rec("no-run", f("runId", ""))),
		skipped("no nodeId", rec("no-node", f("nodeId", ""))),
		skipped("no attempt", rec("no-attempt", f("attempt", ""))),
		answered("no context", rec("no-context", f("context", "")), invalidInput("no-context")),
		answered("no token", rec("no-token", f("token", "")), badCompleted(key("no-token"), 10)),
		answered("no target and no type", rec("no-target", f("targetExecutor", "")),
			badFailed(key("no-target"), domain.CodeNoExecutor, "declares no executor type")),

		// Wrongly typed values.
		answered("attempt as a string", rec("attempt-string", f("attempt", `"1"`)), badCompleted(key("attempt-string"), 10)),
		skipped("attempt a fraction", rec("attempt-fraction", f("attempt", "1.5"))),
		skipped("attempt a bool", rec("attempt-bool", f("attempt", "true"))),
		skipped("attempt null", rec("attempt-null", f("attempt", "null"))),
		answered("attempt 0", rec("attempt-zero", f("attempt", "0")), invalidTask("attempt-zero", 0, "attempt 0")),
		answered("attempt -1", rec("attempt-negative", f("attempt", "-1")), invalidTask("attempt-negative", -1, "attempt -1")),
		skipped("attempt beyond int32", rec("attempt-huge", f("attempt", "2147483648"))),
		answered("number as a string", amount("string", `"12.5"`), badCompleted(key("string"), 12.5)),
		answered("array for a number", amount("array", "[1,2]"), invalidInput("array")),
		answered("object for a number", amount("object", `{"value":1}`), invalidInput("object")),
		answered("null for a number", amount("null", "null"), invalidInput("null")),
		answered("bool for a number", amount("bool", "true"), invalidInput("bool")),
		answered("context null", rec("context-null", f("context", "null")), invalidInput("context-null")),
		answered("timeout as a string", rec("timeout-string", f("timeoutSeconds", `"10"`)), invalidTask("timeout-string", 1, "timeoutSeconds")),
		answered("negative timeout", rec("timeout-negative", f("timeoutSeconds", "-1")), invalidTask("timeout-negative", 1, "negative")),
		answered("timeout beyond int64", rec("timeout-huge", f("timeoutSeconds", "1e30")), invalidTask("timeout-huge", 1, "timeoutSeconds")),
		answered("task id a number", rec("task-id-number", f("taskId", "42")), invalidTask("task-id-number", 1, "taskId")),
		answered("scheduledAt not a time", rec("scheduled-text", f("scheduledAt", `"yesterday"`)), invalidTask("scheduled-text", 1, "yesterday")),

		// Huge: at the limits, and beyond them.
		answered("record of KAFKA_MAX_MESSAGE_BYTES", sized("at-limit", badKafkaMaxRecord), badCompleted(key("at-limit"), 10)),
		answered("record one byte over", sized("over-limit", badKafkaMaxRecord+1), invalidTask("over-limit", 1, "more than the 131072 allowed")),
		answered("record five times over", sized("far-over", 5*badKafkaMaxRecord), invalidTask("far-over", 1, "more than the 131072 allowed")),
		answered("runId of 255 bytes", rec("run-255", f("runId", `"`+badRepeat("r", 255)+`"`)), badCompleted(badKey(badRepeat("r", 255), "run-255", 1), 10)),
		skipped("runId of 256 bytes", rec("run-256", f("runId", `"`+badRepeat("r", 256)+`"`))),
		answered("token of 64 KiB", rec("token-64k", f("token", `"`+badRepeat("t", domain.MaxExecutionTokenBytes)+`"`)),
			badCompleted(key("token-64k"), 10).withToken(badRepeat("t", domain.MaxExecutionTokenBytes))),
		skipped("token over 64 KiB", rec("token-big", f("token", `"`+badRepeat("t", domain.MaxExecutionTokenBytes+1)+`"`))),
		skipped("taskId over 1 KiB", rec("task-id-big", f("taskId", `"`+badRepeat("i", domain.MaxTaskIDBytes+1)+`"`))),
		answered("5,000 variables", rec("many-vars", f("context", "{"+strings.Join(manyVars, ",")+"}")), badCompleted(key("many-vars"), 12)),
		answered("amount of 100 KiB", amount("amount-big", `"`+badRepeat("9", 100<<10)+`x"`), invalidInput("amount-big")),

		// Deeply nested.
		answered("context nested 10,000 levels", rec("deep-context", f("context", badNestedJSON(10000, "1"))),
			invalidTask("deep-context", 1, "exceeded max depth")),
		answered("context nested 5,000 levels beside the amount", rec("deep-ok", f("context", `{"amount":10,"deep":`+badNestedJSON(5000, "1")+`}`)),
			badCompleted(key("deep-ok"), 10)),

		// Not UTF-8.
		skipped("runId not UTF-8", rec("utf8-run", f("runId", `"run`+badLoneByte+`"`))),
		answered("variable not UTF-8", amount("utf8-value", `"1`+badTruncated+`"`), invalidTask("utf8-value", 1, "not valid UTF-8")),
		answered("token not UTF-8", rec("utf8-token", f("token", `"token`+badSurrogate+`"`)),
			badFailed(key("utf8-token"), domain.CodeInvalidTask, "not valid UTF-8").withToken("token\uFFFD")),
		{name: "record key not UTF-8", key: []byte(badLoneByte + badSurrogate), value: rec("utf8-key"), result: badCompleted(key("utf8-key"), 10)},
		{name: "authorization header of garbage", value: rec("bad-header"), headers: []kafkatest.Header{{Key: kafka.AuthorizationHeader, Value: []byte(badLoneByte)}},
			result: badCompleted(key("bad-header"), 10)},

		// Ids against the rule, and routing that contradicts itself.
		skipped("runId with a space", rec("space", f("runId", `"run 1"`))),
		skipped("runId with a slash", rec("slash", f("runId", `"run/1"`))),
		skipped("runId with a NUL", rec("nul", f("runId", `"run\u0000"`))),
		skipped("runId with a newline", rec("newline", f("runId", `"run\nforged log line"`))),
		skipped("nodeId with dots and slashes", rec("../../etc/passwd")),
		skipped("target executor with a slash", rec("target-slash", f("targetExecutor", `"executor/evil"`))),
		answered("node type contradicting the target", rec("contradiction", f("targetExecutor", `"`+kafkaNotificationExecutorID+`"`),
			f("nodeType", `"calculate-tax"`)), badFailed(key("contradiction"), domain.CodeNoExecutor, kafkaNotificationExecutorID)),
		answered("unknown executor type", rec("unknown-type", f("executorType", `"no-such-type"`)),
			badFailed(key("unknown-type"), domain.CodeNoExecutor, "no-such-type")),
		answered("another run's idempotency key", rec("other-key", f("idempotencyKey", `"run-x:other-key:1"`)),
			invalidTask("other-key", 1, "idempotency key")),
	}
}

// TestBadInputOnKafka writes the table's hostile records to the tasks
// topic, each followed by a valid task, on one partition so that the valid
// task's answer proves the record before it was taken. Every row is
// answered with the result it deserves (FAILED INVALID_TASK, from the
// identity its top level yields, for a record that is not a well-formed
// task), or, when no result can name it, skipped and committed as
// docs/protocol.md 4.3 says; the valid task after it completes with the
// right tax; every record is committed in the end; and no row makes the
// service write a log line of 8 KiB or more.
func TestBadInputOnKafka(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Start(t, kafkatest.WithPartitions(1))
	vars := kafkaTwoTypesEnv(broker)
	vars["GAMELAN_EXECUTOR_KAFKA_MAX_MESSAGE_BYTES"] = fmt.Sprint(badKafkaMaxRecord)
	r := startKafkaService(t, broker, vars)
	results := broker.Results(t)

	outcome := &testkit.Outcome{Scenario: "bad input: Kafka tasks topic"}
	rows := badKafkaRows()
	for i, row := range rows {
		mark := badLogMark(r.logs)
		if row.result != nil {
			outcome.Submitted(row.result.key)
		}
		require.NoError(t, broker.ProduceRaw(deadline(t, conditionTimeout), kafkatest.TasksTopic, row.key, row.value, row.headers...), row.name)
		sentinel := kafka.TaskMessage{RunID: badKafkaRun, NodeID: badSentinelNode(i), Attempt: 1, Token: "token-" + badSentinelNode(i),
			TargetExecutor: kafkaTaxExecutorID, Context: map[string]any{"amount": badSentinelAmount(i)}}
		outcome.Submitted(kafkatest.TaskKey(sentinel))
		require.NoError(t, broker.ProduceTask(deadline(t, conditionTimeout), sentinel), row.name)
		if row.result != nil {
			if res, ok := badWaitKafkaResult(t, results, row.result.key); ok {
				badCheckKafkaResult(t, row.name, res, row.result)
			}
		}
		if res, ok := badWaitKafkaResult(t, results, kafkatest.TaskKey(sentinel)); ok {
			checkKafkaTaxResult(t, res, sentinel)
		}
		badCheckLogs(t, r.logs, mark, row.name)
	}
	waitForLagZero(t, broker, conditionTimeout)

	for _, res := range results.All() {
		outcome.Answer(kafkatest.ResultKey(res))
	}
	outcome.Notes = map[string]any{"rows": len(rows)}
	outcome.Check(t)
	badCheckLogs(t, r.logs, 0, "the whole table")
	assert.Contains(t, r.logs.text(), "task record skipped", "records no result can name are logged")
	code, _ := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, 200, code, "the service is still ready")
}

// badWaitKafkaResult waits for the result with key on the results topic.
func badWaitKafkaResult(t *testing.T, results *kafkatest.ResultReader, key string) (kafka.ResultMessage, bool) {
	t.Helper()
	var res kafka.ResultMessage
	ok := assert.Eventually(t, func() bool {
		var found bool
		res, found = results.UniqueResults()[key]
		return found
	}, conditionTimeout, 10*time.Millisecond, "no result for %.200s", key)
	return res, ok
}

// badCheckKafkaResult asserts that res, a result on the results topic, is
// what want says.
func badCheckKafkaResult(t *testing.T, row string, res kafka.ResultMessage, want *badResult) {
	t.Helper()
	assert.Equal(t, want.key, kafkatest.ResultKey(res), row)
	assert.False(t, res.CompletedAt.IsZero(), "%s: completedAt", row)
	if want.token != "" {
		assert.Equal(t, want.token, res.ExecutionToken, "%s: token", row)
	}
	if want.code == "" {
		assert.Equal(t, "COMPLETED", res.Status, "%s: %+v", row, res.Error)
		assert.InDelta(t, want.amount*0.1, res.Output["tax"], 1e-9, "%s: tax", row)
		return
	}
	assert.Equal(t, "FAILED", res.Status, row)
	if assert.NotNil(t, res.Error, row) {
		assert.Equal(t, want.code, res.Error.Code, "%s: %.300s", row, res.Error.Message)
		assert.Contains(t, res.Error.Message, want.contains, row)
		assert.LessOrEqual(t, len(res.Error.Message), domain.MaxErrorMessageBytes+64, "%s: the error message is bounded", row)
	}
}
