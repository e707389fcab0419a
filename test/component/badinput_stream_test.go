package component

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// badStreamRun is the run id of the stream and bidi tables' tasks.
const badStreamRun = "run-bad-stream"

// badStreamRow is one hostile task on an engine stream (StreamTasks or
// ExecuteStream): the ExecutionTask's bytes, the executor whose stream
// carries it (calculate-tax's when empty), and what the engine must get: the
// result, or none when no result can name the task (docs/protocol.md 3.1:
// logged, throttled, and dropped), or, for a message beyond
// GRPC_MAX_MESSAGE_SIZE, the stream reset and reopened.
type badStreamRow struct {
	name       string
	raw        []byte
	executorID string
	result     *badResult
	reset      bool
}

// badStreamRows is the table of the pull intakes. ExecutionTask fields:
// 1 task_id, 2 run_id, 3 node_id, 4 node_name, 5 node_type, 6 attempt,
// 7 execution_token, 8 context, 9 configuration, 10 timeout_seconds.
func badStreamRows(t *testing.T) []badStreamRow {
	// task is a valid calculate-tax task for node, of amount 10.
	task := func(node string) *gamelanv1.ExecutionTask {
		return &gamelanv1.ExecutionTask{TaskId: "task-" + node, RunId: badStreamRun, NodeId: node, NodeType: "calculate-tax",
			Attempt: 1, ExecutionToken: "token-" + node, Context: mustStruct(t, map[string]any{"amount": 10.0})}
	}
	enc := func(m *gamelanv1.ExecutionTask) []byte { return badMarshal(t, m) }
	with := func(node string, edit func(m *gamelanv1.ExecutionTask)) []byte {
		m := task(node)
		edit(m)
		return enc(m)
	}
	amount := func(node string, value any) []byte {
		return with(node, func(m *gamelanv1.ExecutionTask) { m.Context = mustStruct(t, map[string]any{"amount": value}) })
	}
	key := func(node string) string { return badKey(badStreamRun, node, 1) }
	dropped := func(name string, raw []byte) badStreamRow { return badStreamRow{name: name, raw: raw} }
	answered := func(name string, raw []byte, result *badResult) badStreamRow {
		return badStreamRow{name: name, raw: raw, result: result}
	}
	invalidTask := func(node string, attempt int, contains string) *badResult {
		return badFailed(badKey(badStreamRun, node, attempt), domain.CodeInvalidTask, contains).withToken("token-" + node).withTaskID("task-" + node)
	}
	undecodable := func(node string) *badResult { return invalidTask(node, 1, "could not be decoded") }
	invalidInput := func(node string) *badResult { return badFailed(key(node), domain.CodeInvalidInput, "amount") }

	manyVars := map[string]any{"amount": 12.0}
	for i := range badManyVars(5_000, 50_000) {
		manyVars[fmt.Sprintf("v%05d", i)] = "x"
	}
	// The deep contexts are appended to the task's encoding as a second
	// context field, which protobuf merges into the first.
	deep10k, deep3k := string(badDeepStruct(10000)), string(badDeepStruct(3000))
	truncated := append(protowire.AppendVarint(protowire.AppendTag(enc(task("truncated")), 8, protowire.BytesType), 50), "abc"...)

	return []badStreamRow{
		// Malformed.
		dropped("garbage bytes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
		dropped("empty message", nil),
		answered("truncated after its identity", truncated, undecodable("truncated")),
		answered("context that is not a Struct", badString(with("not-struct", func(m *gamelanv1.ExecutionTask) { m.Context = nil }), 8, "not a struct"),
			undecodable("not-struct")),
		answered("attempt of the wrong wire type", badString(with("wire-attempt", func(m *gamelanv1.ExecutionTask) { m.Attempt = 0 }), 6, "1"),
			invalidTask("wire-attempt", 0, "attempt 0")),

		// Missing fields.
		dropped("no run id", with("no-run", func(m *gamelanv1.ExecutionTask) { m.RunId = "" })),
		dropped("no node id", with("", func(m *gamelanv1.ExecutionTask) {})),
		answered("no attempt", with("no-attempt", func(m *gamelanv1.ExecutionTask) { m.Attempt = 0 }), invalidTask("no-attempt", 0, "attempt 0")),
		answered("no task id", with("no-task-id", func(m *gamelanv1.ExecutionTask) { m.TaskId = "" }),
			badCompleted(key("no-task-id"), 10).withTaskID(key("no-task-id"))),
		answered("no token", with("no-token", func(m *gamelanv1.ExecutionTask) { m.ExecutionToken = "" }), badCompleted(key("no-token"), 10)),
		answered("no context", with("no-context", func(m *gamelanv1.ExecutionTask) { m.Context = nil }), invalidInput("no-context")),
		answered("no node type", with("no-type", func(m *gamelanv1.ExecutionTask) { m.NodeType = "" }), badCompleted(key("no-type"), 10)),

		// Wrongly typed values.
		answered("number as a string", amount("string", "12.5"), badCompleted(key("string"), 12.5)),
		answered("array for a number", amount("array", []any{1.0, 2.0}), invalidInput("array")),
		answered("object for a number", amount("object", map[string]any{"value": 1.0}), invalidInput("object")),
		answered("null for a number", amount("null", nil), invalidInput("null")),
		answered("bool for a number", amount("bool", true), invalidInput("bool")),
		answered("negative attempt", with("neg-attempt", func(m *gamelanv1.ExecutionTask) { m.Attempt = -3 }), invalidTask("neg-attempt", -3, "attempt -3")),
		answered("negative timeout", with("neg-timeout", func(m *gamelanv1.ExecutionTask) { m.TimeoutSeconds = -1 }),
			invalidTask("neg-timeout", 1, "negative")),
		answered("timeout of ten years", with("long-timeout", func(m *gamelanv1.ExecutionTask) { m.TimeoutSeconds = 10 * 365 * 86400 }),
			invalidTask("long-timeout", 1, "365 days")),

		// Huge: at the limits, and beyond them.
		answered("run id of 255 bytes", with("run-255", func(m *gamelanv1.ExecutionTask) { m.RunId = badRepeat("r", 255) }),
			badCompleted(badKey(badRepeat("r", 255), "run-255", 1), 10)),
		dropped("run id of 256 bytes", with("run-256", func(m *gamelanv1.ExecutionTask) { m.RunId = badRepeat("r", 256) })),
		dropped("run id of 1 MiB", with("run-1mib", func(m *gamelanv1.ExecutionTask) { m.RunId = badRepeat("r", 1<<20) })),
		answered("task id of 1 KiB", with("task-1k", func(m *gamelanv1.ExecutionTask) { m.TaskId = badRepeat("i", domain.MaxTaskIDBytes) }),
			badCompleted(key("task-1k"), 10).withTaskID(badRepeat("i", domain.MaxTaskIDBytes))),
		dropped("task id over 1 KiB", with("task-big", func(m *gamelanv1.ExecutionTask) { m.TaskId = badRepeat("i", domain.MaxTaskIDBytes+1) })),
		answered("token of 64 KiB", with("token-64k", func(m *gamelanv1.ExecutionTask) { m.ExecutionToken = badRepeat("t", domain.MaxExecutionTokenBytes) }),
			badCompleted(key("token-64k"), 10).withToken(badRepeat("t", domain.MaxExecutionTokenBytes))),
		dropped("token over 64 KiB", with("token-big", func(m *gamelanv1.ExecutionTask) { m.ExecutionToken = badRepeat("t", domain.MaxExecutionTokenBytes+1) })),
		answered("a huge variable map", with("many-vars", func(m *gamelanv1.ExecutionTask) { m.Context = mustStruct(t, manyVars) }),
			badCompleted(key("many-vars"), 12)),
		answered("amount of 1 MiB", amount("amount-1mib", badRepeat("9", 1<<20)+"x"), invalidInput("amount-1mib")),
		{name: "task over GRPC_MAX_MESSAGE_SIZE", raw: with("over-limit", func(m *gamelanv1.ExecutionTask) {
			m.Context = mustStruct(t, map[string]any{"amount": 10.0, "pad": badRepeat("p", badGRPCMaxMessage+1024)})
		}), reset: true},

		// Deeply nested.
		answered("context nested 10,000 levels", badString(enc(task("deep-context")), 8, deep10k), undecodable("deep-context")),
		answered("configuration nested 10,000 levels", badString(enc(task("deep-config")), 9, deep10k), undecodable("deep-config")),
		// Each level of a Struct is three messages deep (Struct, its map
		// entry, Value): 3,000 levels stay within protobuf's limit of 10,000.
		answered("context nested 3,000 levels beside the amount", badString(enc(task("deep-ok")), 8, deep3k), badCompleted(key("deep-ok"), 10)),

		// Not UTF-8.
		dropped("run id not UTF-8", badString(enc(task("utf8-run")), 2, "run"+badLoneByte)),
		dropped("node id not UTF-8", badString(enc(task("utf8-node")), 3, "node"+badSurrogate)),
		dropped("task id not UTF-8", badString(enc(task("utf8-task")), 1, "task"+badTruncated)),
		// A result cannot carry bytes that are not UTF-8 either: the token
		// comes back with U+FFFD in their place.
		answered("token not UTF-8", badString(enc(task("utf8-token")), 7, "token"+badLoneByte),
			badFailed(badKey(badStreamRun, "utf8-token", 1), domain.CodeInvalidTask, "could not be decoded").withToken("token\uFFFD")),
		answered("node name not UTF-8", badString(enc(task("utf8-name")), 4, badLoneByte), undecodable("utf8-name")),
		answered("node type not UTF-8", badString(enc(task("utf8-type")), 5, "calculate-tax"+badLoneByte), undecodable("utf8-type")),
		answered("variable not UTF-8", badString(with("utf8-value", func(m *gamelanv1.ExecutionTask) { m.Context = nil }), 8,
			badStructEntry("amount", "1"+badLoneByte)), undecodable("utf8-value")),
		answered("variable name not UTF-8", badString(with("utf8-key", func(m *gamelanv1.ExecutionTask) { m.Context = nil }), 8,
			badStructEntry("amount"+badSurrogate, "1")), undecodable("utf8-key")),

		// Ids against the rule, and routing that contradicts itself.
		dropped("run id with a space", with("space", func(m *gamelanv1.ExecutionTask) { m.RunId = "run 1" })),
		dropped("run id with a slash", with("slash", func(m *gamelanv1.ExecutionTask) { m.RunId = "run/1" })),
		dropped("run id with a NUL", with("nul", func(m *gamelanv1.ExecutionTask) { m.RunId = "run\x00" })),
		dropped("run id with a newline", with("newline", func(m *gamelanv1.ExecutionTask) { m.RunId = "run\nforged log line" })),
		dropped("run id not ASCII", with("unicode", func(m *gamelanv1.ExecutionTask) { m.RunId = "rün" })),
		dropped("node id with dots and slashes", with("../../etc/passwd", func(m *gamelanv1.ExecutionTask) {})),
		answered("node type contradicting the stream", with("contradiction", func(m *gamelanv1.ExecutionTask) { m.NodeType = "notification-sender" }),
			badFailed(key("contradiction"), domain.CodeNoExecutor, taxExecutorID)),
		{name: "task on another executor's stream", raw: enc(task("other-stream")), executorID: notificationExecutorID,
			result: badFailed(key("other-stream"), domain.CodeNoExecutor, notificationExecutorID)},
		answered("unknown node type", with("unknown-type", func(m *gamelanv1.ExecutionTask) { m.NodeType = "no-such-type" }),
			badFailed(key("unknown-type"), domain.CodeNoExecutor, "no-such-type")),
	}
}

// TestBadInputOnStreams sends the table's hostile tasks on StreamTasks and
// on ExecuteStream, each followed by a valid task. Every row is answered
// with the result it deserves (FAILED INVALID_TASK for a task that breaks
// a rule or does not decode, by the identity its first fields carry), or,
// when no result could name it, dropped as docs/protocol.md 3.1 says, or,
// beyond GRPC_MAX_MESSAGE_SIZE, costs its stream, which is reopened; the
// valid task after it completes with the right tax; and no row makes the
// service write a log line of 8 KiB or more.
func TestBadInputOnStreams(t *testing.T) {
	t.Parallel()
	for _, intake := range []string{"stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			t.Parallel()
			badStreamTable(t, intake)
		})
	}
}

// badStreamTable runs the stream table on intake, "stream" or "bidi", with
// a service of its own, hosting calculate-tax and notification-sender.
func badStreamTable(t *testing.T, intake string) {
	frames := newBadRawFrames()
	var streamCalls atomic.Int64
	countCalls := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if info.FullMethod == gamelanv1.ExecutorService_StreamTasks_FullMethodName || info.FullMethod == gamelanv1.ExecutorService_ExecuteStream_FullMethodName {
			streamCalls.Add(1)
		}
		return handler(srv, ss)
	}
	engine := grpctest.NewEngine(grpctest.WithServerOptions(grpc.ForceServerCodecV2(frames.codec()), grpc.ChainStreamInterceptor(countCalls)))
	addr := engine.Start(t)
	vars := twoTypesEnv(addr, intake)
	vars["GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE"] = fmt.Sprint(badGRPCMaxMessage)
	r := startService(t, vars)
	waitForServing(t, engine, r, taxExecutorID)
	waitForRegistration(t, engine, notificationExecutorID)

	outcome := &testkit.Outcome{Scenario: "bad input: gRPC " + intake}
	rows := badStreamRows(t)
	resets := 0
	for i, row := range rows {
		mark := badLogMark(r.logs)
		sentinel := badSentinelNode(i)
		sentinelTask := taxTask(t, badStreamRun, sentinel, fmt.Sprint(badSentinelAmount(i)))
		// The hostile bytes go out in place of a placeholder task bearing
		// the sentinel's key: the engine counts a task it sent as
		// outstanding on the stream until a result names it, and the
		// sentinel's result then releases both (an ExecuteStream has room
		// for ten tasks only, and most rows are never answered under the
		// placeholder's key).
		placeholder := &gamelanv1.ExecutionTask{TaskId: fmt.Sprintf("bad-raw-%02d", i), RunId: badStreamRun, NodeId: sentinel, Attempt: 1}
		frames.put(placeholder.GetTaskId(), row.raw)
		executorID := taxExecutorID
		if row.executorID != "" {
			executorID = row.executorID
		}
		if row.result != nil {
			outcome.Submitted(row.result.key)
		}
		outcome.Submitted(resultKey(badStreamRun, sentinel))
		calls := streamCalls.Load()
		engine.Enqueue(executorID, placeholder)
		if row.reset {
			// The engine does not requeue what was outstanding on a broken
			// stream: the sentinel is queued once the stream is reopened.
			require.Eventually(t, func() bool { return streamCalls.Load() > calls }, conditionTimeout, conditionTick,
				"%s: the stream was not reopened; logs:\n%.4000s", row.name, r.logs.text())
			resets++
		}
		engine.Enqueue(taxExecutorID, sentinelTask)
		if row.result != nil {
			badCheckGRPCResult(t, row.name, badWaitGRPCResult(t, engine, row.result.key), row.result)
		}
		checkTaxResult(t, badWaitGRPCResult(t, engine, resultKey(badStreamRun, sentinel)), badStreamRun, sentinel, fmt.Sprint(badSentinelAmount(i)))
		badCheckLogs(t, r.logs, mark, row.name)
	}

	for _, res := range engine.Results() {
		outcome.Answer(domain.IdempotencyKey(res.GetRunId(), res.GetNodeId(), int(res.GetAttempt())))
	}
	outcome.Notes = map[string]any{"rows": len(rows), "streamsReset": resets}
	outcome.Check(t)
	badCheckLogs(t, r.logs, 0, "the whole table")
	assert.Contains(t, r.logs.text(), "no result can name it", "tasks no result can name are logged")
	assert.Contains(t, r.logs.text(), "ResourceExhausted", "the stream reset is logged with its status")
	waitForStatus(t, r.baseURL, "/q/health/ready", 200)
}
