package component

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/test/testkit"
)

// badRESTRun is the run id of the REST table's tasks.
const badRESTRun = "run-bad-rest"

// badRESTMaxBody is REST_MAX_BODY_BYTES in the REST table: the default.
const badRESTMaxBody = 1 << 20

// badDrop, as a header's value in badRESTRequest's edits, leaves the header
// out.
const badDrop = "\x00drop"

// badHeader is one request header, written byte for byte.
type badHeader struct{ name, value string }

// badRESTRequest is the raw HTTP/1.1 request of a calculate-tax task for
// node, its headers edited (an edit replaces the header of its name in
// place, badDrop removes it, a new name is added at the end) and body as
// given, written byte for byte: Go's HTTP client refuses to send some of
// the table's headers.
func badRESTRequest(method, node string, body string, edits ...badHeader) []byte {
	headers := []badHeader{
		{"X-Executor-Id", taxExecutorID}, {"X-Run-Id", badRESTRun}, {"X-Node-Id", node}, {"X-Attempt", "1"},
		{"X-Idempotency-Key", badKey(badRESTRun, node, 1)}, {"Content-Type", "application/json"},
	}
	for _, e := range edits {
		replaced := false
		for i := range headers {
			if headers[i].name == e.name {
				headers[i].value, replaced = e.value, true
			}
		}
		if !replaced {
			headers = append(headers, e)
		}
	}
	var b strings.Builder
	b.WriteString(method + " /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
	for _, h := range headers {
		if h.value != badDrop {
			b.WriteString(h.name + ": " + h.value + "\r\n")
		}
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return []byte(b.String())
}

// badHTTPAnswer is the status, content type and body of an answer.
type badHTTPAnswer struct {
	status      int
	contentType string
	allow       string
	body        []byte
}

// badPost sends raw to the intake at addr on a connection of its own and
// reads the answer. The request is written beside the read: a server that
// answers before reading it all (headers too large) must not block the
// writer; the deadline makes a hang a failure.
func badPost(t *testing.T, addr string, raw []byte) (badHTTPAnswer, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, conditionTimeout)
	if err != nil {
		return badHTTPAnswer{}, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(conditionTimeout)); err != nil {
		return badHTTPAnswer{}, err
	}
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, _ = conn.Write(raw) // a server that answered early may close first
	}()
	defer func() { <-written }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return badHTTPAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return badHTTPAnswer{}, err
	}
	return badHTTPAnswer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), allow: resp.Header.Get("Allow"), body: body}, nil
}

// badRESTRow is one hostile request to the REST intake and what the engine
// must be told: the status, with the intake's JSON answer (accepted, and a
// message containing contains) unless plain (Go's HTTP server refused the
// request before the intake saw it), and for 202 the result that follows.
type badRESTRow struct {
	name     string
	raw      []byte
	status   int
	plain    bool
	contains string
	result   *badResult
}

func badRESTRows() []badRESTRow {
	key := func(node string) string { return badKey(badRESTRun, node, 1) }
	post := func(node, body string, edits ...badHeader) []byte {
		return badRESTRequest(http.MethodPost, node, body, edits...)
	}
	h := func(name, value string) badHeader { return badHeader{name, value} }
	refused := func(name string, raw []byte, contains string) badRESTRow {
		return badRESTRow{name: name, raw: raw, status: http.StatusBadRequest, contains: contains}
	}
	answered := func(name string, raw []byte, result *badResult) badRESTRow {
		return badRESTRow{name: name, raw: raw, status: http.StatusAccepted, contains: "accepted", result: result}
	}
	invalidInput := func(node string) *badResult { return badFailed(key(node), domain.CodeInvalidInput, "amount") }
	amount := func(node, raw string) []byte { return post(node, `{"amount":`+raw+`}`) }
	// A body of exactly n bytes: the amount, and padding.
	sized := func(n int) string {
		short := len(`{"amount":10,"pad":""}`)
		return `{"amount":10,"pad":"` + badRepeat("p", n-short) + `"}`
	}
	manyVars := []string{`"amount":12`}
	for i := range badManyVars(5_000, 20_000) {
		manyVars = append(manyVars, fmt.Sprintf(`"v%05d":"x"`, i))
	}

	return []badRESTRow{
		// Malformed.
		refused("body not JSON", post("not-json", "not json at all"), "not a JSON object"),
		refused("body truncated", post("truncated", `{"amount": `), "not a JSON object"),
		refused("body an array", post("array-body", `[{"amount":10}]`), "not a JSON object"),
		refused("body a string", post("string-body", `"amount=10"`), "not a JSON object"),
		refused("body a number", post("number-body", `10`), "not a JSON object"),
		refused("body null", post("null-body", `null`), "not a JSON object"),
		refused("context an array", post("context-array", `{"context":[1,2]}`), "body"),
		refused("context a string", post("context-string", `{"context":"amount=10"}`), "body"),
		refused("timeoutSeconds a string", post("timeout-string", `{"context":{"amount":10},"timeoutSeconds":"10"}`), "timeoutSeconds"),
		refused("taskId a number", post("task-id-number", `{"context":{"amount":10},"taskId":42}`), "taskId"),
		{name: "GET", raw: badRESTRequest(http.MethodGet, "get", ""), status: http.StatusMethodNotAllowed, contains: "POST"},
		{name: "PUT", raw: badRESTRequest(http.MethodPut, "put", `{"amount":10}`), status: http.StatusMethodNotAllowed, contains: "POST"},

		// Missing fields.
		refused("no X-Run-Id", post("no-run", `{"amount":10}`, h("X-Run-Id", badDrop)), "X-Run-Id and X-Node-Id are required"),
		refused("X-Run-Id empty", post("empty-run", `{"amount":10}`, h("X-Run-Id", "")), "X-Run-Id and X-Node-Id are required"),
		refused("no X-Node-Id", post("no-node", `{"amount":10}`, h("X-Node-Id", badDrop)), "X-Run-Id and X-Node-Id are required"),
		refused("no X-Attempt", post("no-attempt", `{"amount":10}`, h("X-Attempt", badDrop)), "X-Attempt is required"),
		answered("no body", post("no-body", ""), invalidInput("no-body")),
		answered("context null", post("context-null", `{"context":null}`), invalidInput("context-null")),
		answered("no executor id and no type", post("no-executor", `{"amount":10}`, h("X-Executor-Id", badDrop)),
			badFailed(key("no-executor"), domain.CodeNoExecutor, "declares no executor type")),

		// Wrongly typed values.
		refused("X-Attempt a word", post("attempt-word", `{"amount":10}`, h("X-Attempt", "one")), "not a whole number"),
		refused("X-Attempt a fraction", post("attempt-fraction", `{"amount":10}`, h("X-Attempt", "1.5")), "not a whole number"),
		refused("X-Attempt 0", post("attempt-zero", `{"amount":10}`, h("X-Attempt", "0")), "attempt 0"),
		refused("X-Attempt -1", post("attempt-negative", `{"amount":10}`, h("X-Attempt", "-1")), "attempt -1"),
		refused("X-Attempt beyond int32", post("attempt-huge", `{"amount":10}`, h("X-Attempt", "2147483648")), "attempt 2147483648"),
		refused("X-Attempt beyond int64", post("attempt-huger", `{"amount":10}`, h("X-Attempt", "99999999999999999999")), "not a whole number"),
		answered("number as a string", amount("string", `"12.5"`), badCompleted(key("string"), 12.5)),
		answered("array for a number", amount("array", "[1,2]"), invalidInput("array")),
		answered("object for a number", amount("object", `{"value":1}`), invalidInput("object")),
		answered("null for a number", amount("null", "null"), invalidInput("null")),
		answered("bool for a number", amount("bool", "true"), invalidInput("bool")),
		refused("negative timeout", post("timeout-negative", `{"context":{"amount":10},"timeoutSeconds":-1}`), "negative"),

		// Huge: at the limits, and beyond them.
		answered("body of REST_MAX_BODY_BYTES", post("at-limit", sized(badRESTMaxBody)), badCompleted(key("at-limit"), 10)),
		refused("body one byte over", post("over-limit", sized(badRESTMaxBody+1)), "body larger than 1048576 bytes"),
		answered("amount of almost 1 MiB", amount("amount-big", `"`+badRepeat("9", badRESTMaxBody-64)+`x"`), invalidInput("amount-big")),
		answered("X-Run-Id of 255 bytes", post("run-255", `{"amount":10}`, h("X-Run-Id", badRepeat("r", 255)), h("X-Idempotency-Key", badDrop)),
			badCompleted(badKey(badRepeat("r", 255), "run-255", 1), 10)),
		refused("X-Run-Id of 256 bytes", post("run-256", `{"amount":10}`, h("X-Run-Id", badRepeat("r", 256)), h("X-Idempotency-Key", badDrop)), "run id"),
		refused("X-Run-Id of 512 KiB", post("run-huge", `{"amount":10}`, h("X-Run-Id", badRepeat("r", 512<<10)), h("X-Idempotency-Key", badDrop)), "more bytes"),
		{name: "headers over 1 MiB", raw: post("headers-huge", `{"amount":10}`, h("X-Pad", badRepeat("p", 1100<<10))),
			status: http.StatusRequestHeaderFieldsTooLarge, plain: true},
		refused("taskId over 1 KiB", post("task-id-big", `{"context":{"amount":10},"taskId":"`+badRepeat("i", domain.MaxTaskIDBytes+1)+`"}`), "task id"),
		refused("token over 64 KiB", post("token-big", `{"context":{"amount":10},"token":"`+badRepeat("t", domain.MaxExecutionTokenBytes+1)+`"}`), "execution token"),
		answered("a huge variable map", post("many-vars", "{"+strings.Join(manyVars, ",")+"}"), badCompleted(key("many-vars"), 12)),

		// Deeply nested.
		// The JSON decoder takes 10,000 levels, and no more.
		answered("body nested 10,000 levels", post("deep-body", badNestedJSON(10000, "1")), invalidInput("deep-body")),
		refused("body nested 10,001 levels", post("deeper-body", badNestedJSON(10001, "1")), "exceeded max depth"),
		refused("context nested 10,000 levels", post("deep-context", `{"context":`+badNestedJSON(10000, "1")+`}`), "exceeded max depth"),
		answered("nested 1,000 levels beside the amount", post("deep-ok", `{"amount":10,"deep":`+badNestedJSON(1000, "1")+`}`),
			badCompleted(key("deep-ok"), 10)),

		// Not UTF-8. JSON decoding makes a body's bad bytes U+FFFD, as it
		// does on Kafka; ids in headers are held to the id rule.
		refused("X-Run-Id not UTF-8", post("utf8-run", `{"amount":10}`, h("X-Run-Id", "run"+badLoneByte), h("X-Idempotency-Key", badDrop)), "run id"),
		refused("X-Node-Id not UTF-8", post("utf8-node", `{"amount":10}`, h("X-Node-Id", "node"+badSurrogate), h("X-Idempotency-Key", badDrop)), "node id"),
		refused("X-Executor-Id not UTF-8", post("utf8-executor", `{"amount":10}`, h("X-Executor-Id", "executor"+badTruncated)), "names no executor hosted here"),
		answered("variable not UTF-8", amount("utf8-value", `"1`+badLoneByte+`"`), invalidInput("utf8-value")),
		answered("taskId not UTF-8", post("utf8-task", `{"context":{"amount":10},"taskId":"task`+badLoneByte+`"}`),
			badCompleted(key("utf8-task"), 10).withTaskID("task\uFFFD")),
		{name: "X-Run-Id with a control character", raw: post("control", `{"amount":10}`, h("X-Run-Id", "run\x01")),
			status: http.StatusBadRequest, plain: true},

		// Ids against the rule, and routing that contradicts itself.
		refused("X-Run-Id with a space", post("space", `{"amount":10}`, h("X-Run-Id", "run 1"), h("X-Idempotency-Key", badDrop)), "run id"),
		refused("X-Run-Id with a slash", post("slash", `{"amount":10}`, h("X-Run-Id", "run/1"), h("X-Idempotency-Key", badDrop)), "run id"),
		refused("X-Node-Id with dots and slashes", post("../../etc/passwd", `{"amount":10}`, h("X-Idempotency-Key", badDrop)), "node id"),
		refused("X-Executor-Id not hosted", post("foreign", `{"amount":10}`, h("X-Executor-Id", "executor-elsewhere")), "names no executor hosted here"),
		refused("X-Executor-Id with a slash", post("executor-slash", `{"amount":10}`, h("X-Executor-Id", "executor/evil")), "names no executor hosted here"),
		answered("X-Executor-Id naming a type", post("by-type", `{"amount":10}`, h("X-Executor-Id", "calculate-tax")), badCompleted(key("by-type"), 10)),
		answered("node type contradicting X-Executor-Id", post("contradiction", `{"nodeType":"calculate-tax","context":{"amount":10}}`,
			h("X-Executor-Id", notificationExecutorID)), badFailed(key("contradiction"), domain.CodeNoExecutor, notificationExecutorID)),
		answered("unknown executor type", post("unknown-type", `{"executorType":"no-such-type","context":{"amount":10}}`),
			badFailed(key("unknown-type"), domain.CodeNoExecutor, "no-such-type")),
		refused("another run's idempotency key", post("other-key", `{"amount":10}`, h("X-Idempotency-Key", "run-x:other-key:1")), "idempotency key"),
	}
}

// TestBadInputOnREST posts the table's hostile requests to the REST
// intake, each followed by a valid task. Every row is refused with a 4xx
// and a JSON body the engine can read (or, for a header no HTTP server
// takes, refused by Go's HTTP server before the intake sees it), or
// accepted and answered with the result it deserves; the valid task after
// it completes with the right tax; and no row makes the service write a
// log line of 8 KiB or more.
func TestBadInputOnREST(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	vars := restEnv(addr)
	vars["GAMELAN_EXECUTOR_REST_MAX_BODY_BYTES"] = fmt.Sprint(badRESTMaxBody)
	r := startService(t, vars)
	endpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	waitForRegistration(t, engine, notificationExecutorID)
	intake, err := url.Parse(endpoint)
	require.NoError(t, err)

	outcome := &testkit.Outcome{Scenario: "bad input: REST intake"}
	rows := badRESTRows()
	for i, row := range rows {
		mark := badLogMark(r.logs)
		if row.result != nil {
			outcome.Submitted(row.result.key)
		}
		answer, err := badPost(t, intake.Host, row.raw)
		if assert.NoError(t, err, row.name) {
			badCheckRESTAnswer(t, row, answer)
		}

		sentinel := badSentinelNode(i)
		amount := fmt.Sprint(badSentinelAmount(i))
		outcome.Submitted(resultKey(badRESTRun, sentinel))
		answer, err = badPost(t, intake.Host, badRESTRequest(http.MethodPost, sentinel,
			`{"context":{"amount":`+amount+`},"token":"token-`+sentinel+`"}`))
		require.NoError(t, err, "after %s", row.name)
		require.Equal(t, http.StatusAccepted, answer.status, "after %s: %s", row.name, answer.body)
		if row.result != nil {
			badCheckGRPCResult(t, row.name, badWaitGRPCResult(t, engine, row.result.key), row.result)
		}
		checkTaxResult(t, badWaitGRPCResult(t, engine, resultKey(badRESTRun, sentinel)), badRESTRun, sentinel, amount)
		badCheckLogs(t, r.logs, mark, row.name)
	}

	for _, res := range engine.Results() {
		outcome.Answer(domain.IdempotencyKey(res.GetRunId(), res.GetNodeId(), int(res.GetAttempt())))
	}
	outcome.Notes = map[string]any{"rows": len(rows)}
	outcome.Check(t)
	badCheckLogs(t, r.logs, 0, "the whole table")
	code, _ := probe(t, r.baseURL, "/q/health/ready")
	assert.Equal(t, http.StatusOK, code, "the service is still ready")
}

// badCheckRESTAnswer asserts that answer is what row says.
func badCheckRESTAnswer(t *testing.T, row badRESTRow, answer badHTTPAnswer) {
	t.Helper()
	assert.Equal(t, row.status, answer.status, "%s: %.300s", row.name, answer.body)
	if row.plain {
		return
	}
	assert.Equal(t, "application/json", answer.contentType, row.name)
	var body struct {
		Accepted *bool  `json:"accepted"`
		Message  string `json:"message"`
	}
	if assert.NoError(t, json.Unmarshal(answer.body, &body), "%s: %.300s", row.name, answer.body) && assert.NotNil(t, body.Accepted, row.name) {
		assert.Equal(t, row.status == http.StatusAccepted, *body.Accepted, row.name)
	}
	assert.Contains(t, body.Message, row.contains, row.name)
	assert.Less(t, len(answer.body), 1024, "%s: the answer is bounded", row.name)
	if row.status == http.StatusMethodNotAllowed {
		assert.Equal(t, http.MethodPost, answer.allow, row.name)
	}
}
