package component

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// badPushRun is the run id of the push table's tasks.
const badPushRun = "run-bad-push"

// badGRPCMaxMessage is GRPC_MAX_MESSAGE_SIZE in the gRPC tables: 2 MiB, so
// that a row can carry a 1 MiB value within it and another go beyond it.
const badGRPCMaxMessage = 2 << 20

// badPushRow is one hostile push: the request's bytes, and what the
// engine must be told: an ack with code ack (and, when accepted, the
// result that follows), or, when ack is 0, the call failing with status.
// contains is part of the ack's or the status's message.
type badPushRow struct {
	name     string
	raw      []byte
	ack      int32
	status   codes.Code
	contains string
	result   *badResult
}

// badPushRows is the push table. ExecutionRequest fields: 1 run_id,
// 2 node_id, 3 attempt, 4 token, 5 variables, 6 idempotency_key,
// 7 signature.
func badPushRows(t *testing.T) []badPushRow {
	// req is a valid calculate-tax push for node, its signature naming
	// calculate-tax's executor (the service hosts two gRPC types).
	req := func(node, amount string) *dispatcherpb.ExecutionRequest {
		r := badPushRequest(badPushRun, node, amount)
		r.Signature = grpctest.Signature(badPushRun, taxExecutorID)
		return r
	}
	enc := func(r *dispatcherpb.ExecutionRequest) []byte { return badMarshal(t, r) }
	with := func(node string, edit func(r *dispatcherpb.ExecutionRequest)) []byte {
		r := req(node, "10")
		edit(r)
		return enc(r)
	}
	key := func(node string) string { return badKey(badPushRun, node, 1) }
	refused := func(name string, raw []byte, contains string) badPushRow {
		return badPushRow{name: name, raw: raw, ack: 400, contains: contains}
	}
	answered := func(name string, raw []byte, result *badResult) badPushRow {
		return badPushRow{name: name, raw: raw, ack: 200, contains: "accepted", result: result}
	}
	undecodable := func(name string, raw []byte) badPushRow {
		return badPushRow{name: name, raw: raw, status: codes.Internal, contains: "unmarshal"}
	}
	invalidInput := func(node string) *badResult { return badFailed(key(node), domain.CodeInvalidInput, "amount") }
	amount := func(node, value string) []byte { return enc(req(node, value)) }
	deepJSON := badNestedJSON(10000, "1")
	// 10,001 nested groups in an unknown field: protobuf skips unknown
	// fields without decoding them, whatever their depth.
	var deepGroup []byte
	for range 10001 {
		deepGroup = protowire.AppendTag(deepGroup, 15, protowire.StartGroupType)
	}
	for range 10001 {
		deepGroup = protowire.AppendTag(deepGroup, 15, protowire.EndGroupType)
	}
	manyVars := req("many-vars", "12")
	for i := range badManyVars(10_000, 100_000) {
		manyVars.Variables[fmt.Sprintf("v%06d", i)] = "x"
	}
	overLimit := req("over-limit", "10")
	overLimit.Variables["pad"] = badRepeat("p", badGRPCMaxMessage+1024)

	return []badPushRow{
		// Malformed: bytes protobuf cannot decode never reach the executor.
		undecodable("undecodable bytes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),
		undecodable("truncated field", append(protowire.AppendVarint(protowire.AppendTag(enc(req("truncated", "10")), 5, protowire.BytesType), 50), "abc"...)),
		answered("unknown field nested 10,001 groups deep", append(enc(req("deep-group", "10")), deepGroup...), badCompleted(key("deep-group"), 10)),
		refused("run id of the wrong wire type", badVarint(with("wire-run", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "" }), 1, 7), "run id is empty"),
		answered("variables of the wrong wire type", badVarint(with("wire-vars", func(r *dispatcherpb.ExecutionRequest) { r.Variables = nil }), 5, 1), invalidInput("wire-vars")),

		// Missing fields: each required id in turn, then no variables.
		refused("no run id", with("no-run", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "" }), "run id is empty"),
		refused("no node id", with("", func(r *dispatcherpb.ExecutionRequest) {}), "node id is empty"),
		refused("no attempt", with("no-attempt", func(r *dispatcherpb.ExecutionRequest) { r.Attempt = 0 }), "attempt 0"),
		refused("empty request", nil, "run id is empty"),
		answered("no variables", with("no-vars", func(r *dispatcherpb.ExecutionRequest) { r.Variables = nil }), invalidInput("no-vars")),
		answered("no token", with("no-token", func(r *dispatcherpb.ExecutionRequest) { r.Token = "" }), badCompleted(key("no-token"), 10)),

		// Wrongly typed values: push variables are strings; a number in
		// one is the normal form, anything else is the handler's refusal.
		answered("number as a padded string", amount("padded", " 12.5 "), badCompleted(key("padded"), 12.5)),
		answered("array for a number", amount("array", "[1,2]"), invalidInput("array")),
		answered("object for a number", amount("object", `{"value":1}`), invalidInput("object")),
		answered("null for a number", amount("null", "null"), invalidInput("null")),
		answered("empty number", amount("empty", ""), invalidInput("empty")),
		answered("NaN", amount("nan", "NaN"), badFailed(key("nan"), domain.CodeInvalidInput, "finite")),
		answered("number out of range", amount("inf", "1e400"), invalidInput("inf")),
		refused("negative attempt", with("neg-attempt", func(r *dispatcherpb.ExecutionRequest) { r.Attempt = -1 }), "attempt -1"),
		answered("largest attempt", with("max-attempt", func(r *dispatcherpb.ExecutionRequest) {
			r.Attempt = domain.MaxAttempt
			r.IdempotencyKey = ""
		}), badCompleted(badKey(badPushRun, "max-attempt", domain.MaxAttempt), 10)),

		// Huge: at the limits, and beyond them.
		answered("run id of 255 bytes", with("run-255", func(r *dispatcherpb.ExecutionRequest) {
			r.RunId = badRepeat("r", 255)
			r.Signature = grpctest.Signature(r.RunId, taxExecutorID)
		}), badCompleted(badKey(badRepeat("r", 255), "run-255", 1), 10)),
		refused("run id of 256 bytes", with("run-256", func(r *dispatcherpb.ExecutionRequest) { r.RunId = badRepeat("r", 256) }), "run id"),
		refused("run id of 1 MiB", with("run-1mib", func(r *dispatcherpb.ExecutionRequest) { r.RunId = badRepeat("r", 1<<20) }), "more bytes"),
		answered("token of 64 KiB", with("token-64k", func(r *dispatcherpb.ExecutionRequest) { r.Token = badRepeat("t", domain.MaxExecutionTokenBytes) }),
			badCompleted(key("token-64k"), 10).withToken(badRepeat("t", domain.MaxExecutionTokenBytes))),
		refused("token over 64 KiB", with("token-big", func(r *dispatcherpb.ExecutionRequest) { r.Token = badRepeat("t", domain.MaxExecutionTokenBytes+1) }), "execution token"),
		refused("idempotency key of 1 MiB", with("key-1mib", func(r *dispatcherpb.ExecutionRequest) { r.IdempotencyKey = badRepeat("k", 1<<20) }), "idempotency key"),
		answered("amount of 1 MiB", amount("amount-1mib", badRepeat("9", 1<<20)+"x"), invalidInput("amount-1mib")),
		answered("a huge variable map", enc(manyVars), badCompleted(key("many-vars"), 12)),
		{name: "request over GRPC_MAX_MESSAGE_SIZE", raw: enc(overLimit), status: codes.ResourceExhausted, contains: "larger than max"},

		// Deeply nested: push variables are flat, so the nesting is text.
		answered("amount nested 10,000 levels", amount("deep-amount", deepJSON), invalidInput("deep-amount")),
		answered("node type nested 10,000 levels", with("deep-type", func(r *dispatcherpb.ExecutionRequest) {
			r.Variables[domain.NodeTypeKey] = deepJSON
			r.Signature = ""
		}), badFailed(key("deep-type"), domain.CodeNoExecutor, "no hosted executor supports")),

		// Not UTF-8: protobuf refuses the request before the executor sees it.
		undecodable("run id not UTF-8", badString(enc(req("utf8-run", "10")), 1, "run"+badLoneByte)),
		undecodable("node id not UTF-8", badString(enc(req("utf8-node", "10")), 2, "node"+badSurrogate)),
		undecodable("token not UTF-8", badString(enc(req("utf8-token", "10")), 4, "token"+badTruncated)),
		undecodable("variable not UTF-8", badString(enc(req("utf8-value", "10")), 5,
			string(badString(badString(nil, 1, "amount"), 2, "1"+badLoneByte)))),
		undecodable("variable name not UTF-8", badString(enc(req("utf8-name", "10")), 5,
			string(badString(badString(nil, 1, "amount"+badLoneByte), 2, "1")))),
		undecodable("signature not UTF-8", badString(enc(req("utf8-sig", "10")), 7, badSurrogate)),

		// Ids against the rule ^[a-zA-Z0-9_-]{1,255}$, and routing that
		// contradicts itself.
		refused("run id with a space", with("space", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "run 1" }), "run id"),
		refused("run id with a slash", with("slash", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "run/1" }), "run id"),
		refused("run id with a NUL", with("nul", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "run\x00" }), `run id "run\x00"`),
		refused("run id with a newline", with("newline", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "run\nforged log line" }), `run id "run\nforged log line"`),
		refused("run id not ASCII", with("unicode", func(r *dispatcherpb.ExecutionRequest) { r.RunId = "rün" }), "run id"),
		refused("node id with dots and slashes", with("../../etc/passwd", func(r *dispatcherpb.ExecutionRequest) {}), "node id"),
		refused("node id of 256 bytes", with(badRepeat("n", 256), func(r *dispatcherpb.ExecutionRequest) {}), "node id"),
		refused("another run's idempotency key", with("other-key", func(r *dispatcherpb.ExecutionRequest) { r.IdempotencyKey = "run-x:other-key:1" }), "idempotency key"),
		answered("signature naming an invalid executor id", with("sig-slash", func(r *dispatcherpb.ExecutionRequest) {
			r.Signature = grpctest.Signature(badPushRun, "executor/evil")
		}), badFailed(key("sig-slash"), domain.CodeNoExecutor, "declares no executor type")),
		answered("signature not Base64", with("sig-garbage", func(r *dispatcherpb.ExecutionRequest) { r.Signature = "%%%not base64%%%" }),
			badFailed(key("sig-garbage"), domain.CodeNoExecutor, "declares no executor type")),
		answered("signature of another run", with("sig-other-run", func(r *dispatcherpb.ExecutionRequest) {
			r.Signature = grpctest.Signature("run-other", taxExecutorID)
		}), badFailed(key("sig-other-run"), domain.CodeNoExecutor, "declares no executor type")),
		answered("node type contradicting the signature", with("contradiction", func(r *dispatcherpb.ExecutionRequest) {
			r.Variables[domain.NodeTypeKey] = "calculate-tax"
			r.Signature = grpctest.Signature(badPushRun, notificationExecutorID)
		}), badFailed(key("contradiction"), domain.CodeNoExecutor, notificationExecutorID)),
		answered("unknown node type", with("unknown-type", func(r *dispatcherpb.ExecutionRequest) { r.Variables[domain.NodeTypeKey] = "no-such-type" }),
			badFailed(key("unknown-type"), domain.CodeNoExecutor, "no-such-type")),
		answered("signature naming an executor not hosted here", with("sig-foreign", func(r *dispatcherpb.ExecutionRequest) {
			r.Variables[domain.NodeTypeKey] = "calculate-tax"
			r.Signature = grpctest.Signature(badPushRun, "executor-elsewhere")
		}), badCompleted(key("sig-foreign"), 10)),
	}
}

// TestBadInputOnPush pushes the table's hostile requests to the service's
// Execute server, each followed by a valid task. Every row is refused with
// an ack the engine can read (400 naming the rule), accepted and answered
// with the result it deserves, or, for bytes protobuf cannot decode or a
// request beyond GRPC_MAX_MESSAGE_SIZE, failed by gRPC itself before the
// executor sees it; the valid task after it completes with the right tax;
// and no row makes the service write a log line of 8 KiB or more.
func TestBadInputOnPush(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := twoTypesEnv(addr, "push")
	vars["GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE"] = fmt.Sprint(badGRPCMaxMessage)
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	waitForRegistration(t, engine, notificationExecutorID)
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })

	outcome := &testkit.Outcome{Scenario: "bad input: gRPC push Execute"}
	rows := badPushRows(t)
	for i, row := range rows {
		mark := badLogMark(r.logs)
		ack := new(dispatcherpb.ExecutionAck)
		err := conn.Invoke(deadline(t, conditionTimeout), dispatcherpb.Executor_Execute_FullMethodName,
			badRawRequest(row.raw), ack, grpc.ForceCodecV2(badClientCodec{}))
		if row.ack == 0 {
			assert.Equal(t, row.status, status.Code(err), "%s: %v (ack %.200v)", row.name, err, ack)
			assert.Contains(t, status.Convert(err).Message(), row.contains, row.name)
		} else if assert.NoError(t, err, row.name) {
			assert.Equal(t, row.ack, ack.GetCode(), "%s: %.300s", row.name, ack.GetMessage())
			assert.Equal(t, row.ack == 200, ack.GetAccepted(), row.name)
			assert.Contains(t, ack.GetMessage(), row.contains, row.name)
			assert.Less(t, len(ack.GetMessage()), 1024, "%s: the ack's message is bounded", row.name)
		}
		if row.result != nil {
			outcome.Submitted(row.result.key)
		}

		sentinel := badSentinelNode(i)
		outcome.Submitted(badKey(badPushRun, sentinel, 1))
		ack, err = engine.Push(deadline(t, conditionTimeout), endpoint, taxPush(badPushRun, sentinel, fmt.Sprint(badSentinelAmount(i))))
		require.NoError(t, err, "after %s", row.name)
		require.True(t, ack.GetAccepted(), "after %s: %v", row.name, ack)
		if row.result != nil {
			badCheckGRPCResult(t, row.name, badWaitGRPCResult(t, engine, row.result.key), row.result)
		}
		checkTaxResult(t, badWaitGRPCResult(t, engine, resultKey(badPushRun, sentinel)), badPushRun, sentinel, fmt.Sprint(badSentinelAmount(i)))
		badCheckLogs(t, r.logs, mark, row.name)
	}

	for _, res := range engine.Results() {
		outcome.Answer(domain.IdempotencyKey(res.GetRunId(), res.GetNodeId(), int(res.GetAttempt())))
	}
	outcome.Notes = map[string]any{"rows": len(rows)}
	outcome.Check(t)
	badCheckLogs(t, r.logs, 0, "the whole table")
	code, _ := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, 200, code, "the service is still ready")
}

// badWaitGRPCResult waits for the result with key at engine and returns
// it.
func badWaitGRPCResult(t *testing.T, engine *grpctest.Engine, key string) *gamelanv1.TaskResult {
	t.Helper()
	var res *gamelanv1.TaskResult
	if !assert.Eventually(t, func() bool {
		res = engine.UniqueResults()[key]
		return res != nil
	}, conditionTimeout, conditionTick, "no result for %.200s", key) {
		return nil
	}
	return res
}
