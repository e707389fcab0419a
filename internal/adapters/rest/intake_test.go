package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// startedIntake returns an intake started with a porttest.Intake of the
// given capacity.
func startedIntake(t *testing.T, cfg IntakeConfig, capacity int) (*Intake, *porttest.Intake) {
	t.Helper()
	intake := newIntake(t, cfg)
	offers := porttest.NewIntake(capacity)
	require.NoError(t, intake.Start(testContext(t), offers))
	t.Cleanup(func() { offers.SettleAll(nil) })
	return intake, offers
}

// headersOnly is a task as Gamelan posts it today: headers, no body.
func headersOnly(run, node string) resttest.TaskPost {
	return resttest.TaskPost{
		ExecutorID: taxExecutorID, RunID: run, NodeID: node, Attempt: 1,
		IdempotencyKey: run + ":" + node + ":1", Signature: "sig",
	}
}

func post(t *testing.T, intake *Intake, p resttest.TaskPost) resttest.Answer {
	t.Helper()
	answer, err := resttest.PostTask(testContext(t), nil, endpoint(intake), p)
	require.NoError(t, err)
	return answer
}

// requireAnswer asserts the status of an answer and that its JSON body
// says whether the task was accepted.
func requireAnswer(t *testing.T, want int, answer resttest.Answer, what string) string {
	t.Helper()
	require.Equal(t, want, answer.Status, "%s: %s", what, answer.Body)
	var body struct {
		Accepted bool   `json:"accepted"`
		Message  string `json:"message"`
	}
	require.NoError(t, json.Unmarshal([]byte(answer.Body), &body), "%s: %s", what, answer.Body)
	assert.Equal(t, want == http.StatusAccepted, body.Accepted, "%s: %s", what, answer.Body)
	assert.NotEmpty(t, body.Message, what)
	return body.Message
}

func TestIntakeAcceptsAGamelanTaskFromHeadersAlone(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	requireAnswer(t, http.StatusAccepted, post(t, intake, headersOnly("run-1", "node-1")), "headers only")

	require.Len(t, offers.Offers(), 1)
	task := offers.Offers()[0].Task
	assert.Equal(t, domain.Task{
		RunID: "run-1", NodeID: "node-1", Attempt: 1, IdempotencyKey: "run-1:node-1:1",
		ExecutorID: taxExecutorID, Context: map[string]any{},
	}, task)
	assert.NotNil(t, task.Context, "an empty context, not none")
	assert.False(t, offers.Offers()[0].Redeliverable)
}

func TestIntakeTakesAJSONBody(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)

	// A body without "context" is the context itself.
	vars := headersOnly("run-1", "vars")
	vars.Body = []byte(`{"amount": 12.5, "customer": {"id": "c-1"}}`)
	requireAnswer(t, http.StatusAccepted, post(t, intake, vars), "variables as the body")

	// A TaskMessage-like body: "context" holds the variables.
	message := headersOnly("run-1", "message")
	message.Body = []byte(`{"context": {"amount": 3}, "configuration": {"region": "EU"}, "taskId": "task-9",
		"nodeName": "Tax", "nodeType": "calculate-tax", "executorType": "tax-calculator", "token": "exec-token",
		"timeoutSeconds": 30}`)
	requireAnswer(t, http.StatusAccepted, post(t, intake, message), "task message as the body")

	// The executor named by its type.
	byType := headersOnly("run-1", "by-type")
	byType.ExecutorID = taxExecutorType
	requireAnswer(t, http.StatusAccepted, post(t, intake, byType), "X-Executor-Id naming the type")

	offered := offers.Offers()
	require.Len(t, offered, 3)
	assert.Equal(t, map[string]any{"amount": 12.5, "customer": map[string]any{"id": "c-1"}}, offered[0].Task.Context)
	got := offered[1].Task
	assert.Equal(t, map[string]any{"amount": float64(3)}, got.Context)
	assert.Equal(t, map[string]any{"region": "EU"}, got.Configuration)
	assert.Equal(t, "task-9", got.TaskID)
	assert.Equal(t, "Tax", got.NodeName)
	assert.Equal(t, "calculate-tax", got.NodeType)
	assert.Equal(t, "tax-calculator", got.ExecutorType)
	assert.Equal(t, taxExecutorID, got.ExecutorID)
	assert.Equal(t, "exec-token", got.ExecutionToken)
	assert.Equal(t, 30*time.Second, got.Timeout)
	// A type names that type's executor: a routing hint, not a declared type.
	assert.Equal(t, taxExecutorID, offered[2].Task.ExecutorID)
	assert.Empty(t, offered[2].Task.ExecutorType)
}

func TestIntakeRefusesMalformedRequests(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{MaxBodyBytes: 1024}, 4)
	without := func(header string) resttest.TaskPost {
		p := headersOnly("run-1", "n")
		p.Header = http.Header{header: nil}
		return p
	}
	withBody := func(body string) resttest.TaskPost {
		p := headersOnly("run-1", "n")
		p.Body = []byte(body)
		return p
	}
	withHeader := func(key, value string) resttest.TaskPost {
		p := headersOnly("run-1", "n")
		p.Header = http.Header{key: {value}}
		return p
	}
	cases := map[string]resttest.TaskPost{
		"no X-Run-Id":                  without("X-Run-Id"),
		"no X-Node-Id":                 without("X-Node-Id"),
		"no identity at all":           {Body: []byte(`{"amount": 1}`)},
		"X-Attempt not a number":       withHeader("X-Attempt", "one"),
		"X-Attempt negative":           withHeader("X-Attempt", "-1"),
		"X-Attempt zero":               withHeader("X-Attempt", "0"),
		"X-Attempt beyond 32 bits":     withHeader("X-Attempt", "2147483648"),
		"no X-Attempt":                 without("X-Attempt"),
		"X-Run-Id against the id rule": withHeader("X-Run-Id", "run 1"),
		"another run's key":            withHeader("X-Idempotency-Key", "run-2:n:1"),
		"X-Executor-Id not hosted":     withHeader("X-Executor-Id", "someone-else"),
		"malformed JSON":               withBody(`{"amount": `),
		"JSON array":                   withBody(`[1, 2]`),
		"JSON string":                  withBody(`"amount"`),
		"context not an object":        withBody(`{"context": "amount=1"}`),
		"timeoutSeconds not a number":  withBody(`{"context": {}, "timeoutSeconds": "30s"}`),
		"body larger than MaxBodyByte": withBody(`{"pad": "` + strings.Repeat("x", 4096) + `"}`),
	}
	for name, p := range cases {
		requireAnswer(t, http.StatusBadRequest, post(t, intake, p), name)
	}
	assert.Empty(t, offers.Offers(), "something malformed was accepted: %s", offers)
	for _, r := range offers.Refusals() {
		assert.ErrorIs(t, r.Err, domain.ErrInvalidTask)
	}

	// The bound is the body's size: exactly MaxBodyBytes is taken.
	exact := withBody(`{"pad": "` + strings.Repeat("x", 1024-len(`{"pad": ""}`)) + `"}`)
	require.Len(t, exact.Body, 1024)
	requireAnswer(t, http.StatusAccepted, post(t, intake, exact), "a body of exactly MaxBodyBytes")
}

func TestIntakeRefusesWith400WhatTheRuntimeFindsInvalid(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	offers.RefuseNext(fmt.Errorf("%w: the runtime says no", domain.ErrInvalidTask))
	message := requireAnswer(t, http.StatusBadRequest, post(t, intake, headersOnly("run-1", "n")), "invalid task")
	assert.Contains(t, message, "the runtime says no")
}

func TestIntakeAnswers503WhenItCannotTakeTasks(t *testing.T) {
	intake := newIntake(t, IntakeConfig{})
	requireAnswer(t, http.StatusServiceUnavailable, post(t, intake, headersOnly("run-1", "before-start")), "before Start")

	offers := porttest.NewIntake(1)
	require.NoError(t, intake.Start(testContext(t), offers))
	t.Cleanup(func() { offers.SettleAll(nil) })
	requireAnswer(t, http.StatusAccepted, post(t, intake, headersOnly("run-1", "first")), "first")
	full := post(t, intake, headersOnly("run-1", "second"))
	requireAnswer(t, http.StatusServiceUnavailable, full, "intake full")
	assert.Equal(t, "1", full.Header.Get("Retry-After"))

	offers.SettleAll(nil)
	requireAnswer(t, http.StatusAccepted, post(t, intake, headersOnly("run-1", "second")), "room again")

	offers.Drain()
	requireAnswer(t, http.StatusServiceUnavailable, post(t, intake, headersOnly("run-1", "draining")), "draining")

	require.NoError(t, intake.Stop(testContext(t)))
	attempts := offers.Attempts()
	requireAnswer(t, http.StatusServiceUnavailable, post(t, intake, headersOnly("run-1", "after-stop")), "after Stop")
	assert.Equal(t, attempts, offers.Attempts(), "nothing offered after Stop")
}

func TestIntakeAuthenticates(t *testing.T) {
	secret := securitytest.Secret(t)
	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: secret, Issuer: "gamelan-engine"})
	require.NoError(t, err)
	mint := func(secret []byte, issuer string, now time.Time) string {
		minter, err := security.NewMinter(security.MinterConfig{
			Secret: secret, Issuer: issuer, Audience: "executor", TTL: time.Minute, Subject: "engine",
			Now: func() time.Time { return now },
		})
		require.NoError(t, err)
		token, err := minter.Token("")
		require.NoError(t, err)
		return token
	}
	intake, offers := startedIntake(t, IntakeConfig{Authenticate: func(token string) error {
		_, err := verifier.Verify(token)
		return err
	}}, 4)

	refused := map[string]resttest.TaskPost{}
	add := func(name, token string, header http.Header) {
		p := headersOnly("run-1", strings.ReplaceAll(name, " ", "-"))
		p.Token, p.Header = token, header
		refused[name] = p
	}
	add("missing token", "", nil)
	add("expired token", mint(secret, "gamelan-engine", time.Now().Add(-time.Hour)), nil)
	add("wrong secret", mint(securitytest.Secret(t), "gamelan-engine", time.Now()), nil)
	add("wrong issuer", mint(secret, "someone", time.Now()), nil)
	add("not a bearer token", "", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}})
	for name, p := range refused {
		message := requireAnswer(t, http.StatusUnauthorized, post(t, intake, p), name)
		assert.NotContains(t, message, string(secret), name)
	}
	assert.Zero(t, offers.Attempts(), "a refused task is not offered")

	valid := headersOnly("run-1", "valid")
	valid.Token = mint(secret, "gamelan-engine", time.Now())
	requireAnswer(t, http.StatusAccepted, post(t, intake, valid), "valid token")

	// Authentication comes first: a malformed request without a token is
	// refused as unauthenticated, telling nothing about the task.
	malformed := headersOnly("", "n")
	requireAnswer(t, http.StatusUnauthorized, post(t, intake, malformed), "malformed and unauthenticated")
}

func TestIntakeTakesPOSTOnly(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		p := headersOnly("run-1", "n")
		req, err := p.Request(testContext(t), endpoint(intake))
		require.NoError(t, err)
		req.Method = method
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, method)
		assert.Equal(t, http.MethodPost, resp.Header.Get("Allow"), method)
	}
	assert.Zero(t, offers.Attempts())

	resp, err := http.Post("http://"+intake.Addr().String()+"/api/v1/other", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "only TaskPath is served")
}

func TestIntakeStartWithACancelledContextFails(t *testing.T) {
	intake := newIntake(t, IntakeConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.Error(t, intake.Start(ctx, porttest.NewIntake(1)))
	requireAnswer(t, http.StatusServiceUnavailable, post(t, intake, headersOnly("run-1", "n")), "not started")
}

func TestNewIntakeFailsOnAPortInUse(t *testing.T) {
	intake := newIntake(t, IntakeConfig{})
	_, err := NewIntake(IntakeConfig{Address: intake.Addr().String()}, testLogger(t))
	require.Error(t, err)
	assert.ErrorContains(t, err, intake.Addr().String())
}

// A timeoutSeconds too large for a time.Duration is refused, not wrapped
// around to a short or negative timeout.
func TestIntakeRefusesATimeoutAboveAYear(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	p := headersOnly("run-timeout", "node-1")
	p.Body = []byte(`{"context":{"amount":1},"timeoutSeconds":18446744074}`)
	answer := post(t, intake, p)
	if answer.Status == http.StatusAccepted {
		offered := offers.Offers()[0].Task
		t.Fatalf("accepted with a timeout of %s for timeoutSeconds 18446744074", offered.Timeout)
	}
	assert.Equal(t, http.StatusBadRequest, answer.Status, answer.Body)
}

// TestIntakeAnswers503ToAnUnexpectedRuntimeError checks that an Offer error
// the Intake contract does not name is taken as transient: 503 with
// Retry-After, so that the engine posts the task again and it is not lost.
func TestIntakeAnswers503ToAnUnexpectedRuntimeError(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	offers.RefuseNext(errors.New("runtime hiccup"))
	answer := post(t, intake, headersOnly("run-1", "hiccup"))
	message := requireAnswer(t, http.StatusServiceUnavailable, answer, "unexpected runtime error")
	assert.Equal(t, "1", answer.Header.Get("Retry-After"))
	assert.Contains(t, message, "runtime hiccup")
	requireAnswer(t, http.StatusAccepted, post(t, intake, headersOnly("run-1", "hiccup")), "posted again")
}

// A rate-limit refusal is a 503 whose Retry-After header gives the delay
// in whole seconds, rounded up, and whose body names the type and limit.
func TestIntakeAnswersARateLimitWithItsRetryAfter(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	offers.RefuseNext(&domain.RateLimitedError{Type: "pay", Limit: domain.RateLimit{PerSecond: 0.5, Burst: 1}, RetryAfter: 1500 * time.Millisecond})
	answer := post(t, intake, headersOnly("run-1", "n"))
	message := requireAnswer(t, http.StatusServiceUnavailable, answer, "rate limited")
	assert.Equal(t, "2", answer.Header.Get("Retry-After"))
	assert.Contains(t, message, `"pay" rate limited to 0.5/s:1: retry after 1500 ms`)
}
