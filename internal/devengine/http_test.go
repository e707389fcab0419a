package devengine

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// TestExecutorLookUpRequiresAToken: with tokens on, GET
// /api/v1/executors/{id} (the REST heartbeater's look-up) shows an
// executor's endpoint and metadata only to a valid token.
func TestExecutorLookUpRequiresAToken(t *testing.T) {
	e := New(Config{})
	e.Register(Executor{ID: "a", Type: "tax", CommunicationType: "GRPC", Endpoint: "10.0.0.7:9090", MaxConcurrent: 1})
	verify := func(token string) error {
		if token != "valid" {
			return errors.New("bad token")
		}
		return nil
	}
	handler := NewHTTP(e, verify, nil, slog.New(slog.DiscardHandler)).Handler()
	get := func(authorization string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/executors/a", nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec
	}

	for _, authorization := range []string{"", "Bearer forged"} {
		rec := get(authorization)
		assert.Equal(t, http.StatusUnauthorized, rec.Code, "authorization %q", authorization)
		assert.NotContains(t, rec.Body.String(), "10.0.0.7")
	}
	assert.Equal(t, int64(2), e.Counters().Refused)
	rec := get("Bearer valid")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Contains(t, rec.Body.String(), "10.0.0.7:9090")
}

// TestTaskAPIShowsTheResultInCamelCase: GET /api/v1/tasks/{id} shows a
// recorded result with the API's JSON names.
func TestTaskAPIShowsTheResultInCamelCase(t *testing.T) {
	e := New(Config{})
	task, err := e.Submit(TaskSpec{ExecutorType: "tax"})
	require.NoError(t, err)
	res := domain.ResultFor(new(task.Domain()), domain.StatusFailed)
	res.ExecutorID, res.Duration = "tax-1", 1500*time.Microsecond
	res.Error = &domain.ErrorInfo{Code: "INVALID_INPUT", Message: "amount is missing", Context: map[string]any{"field": "amount"}}
	require.True(t, e.Result(res))

	rec := httptest.NewRecorder()
	NewHTTP(e, nil, nil, slog.New(slog.DiscardHandler)).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/tasks/"+task.ID, nil))
	require.Equal(t, http.StatusOK, rec.Code)
	var body struct {
		State  string         `json:"state"`
		Result map[string]any `json:"result"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.Equal(t, "FAILED", body.State)
	assert.Equal(t, "FAILED", body.Result["status"])
	assert.Equal(t, "tax-1", body.Result["executorId"])
	assert.Equal(t, 1.5, body.Result["durationMs"])
	assert.Equal(t, map[string]any{"code": "INVALID_INPUT", "message": "amount is missing",
		"context": map[string]any{"field": "amount"}, "retryable": false}, body.Result["error"])
}

// TestSubmitRefusesNodeIDsGamelanRefuses: executors refuse tasks whose
// node id breaks Gamelan's id rules, so POST /api/v1/tasks answers 400 for
// one, saying why, and creates no task; valid ids, and none (the engine
// makes one), are accepted.
func TestSubmitRefusesNodeIDsGamelanRefuses(t *testing.T) {
	e := New(Config{})
	api := NewHTTP(e, nil, nil, slog.New(slog.DiscardHandler)).Handler()
	post := func(nodeID string) *httptest.ResponseRecorder {
		t.Helper()
		body, err := json.Marshal(map[string]any{"executorType": "tax", "nodeId": nodeID})
		require.NoError(t, err)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/tasks", bytes.NewReader(body)))
		return rec
	}

	for _, bad := range []string{"has space", "dotted.id", "slash/id", "colon:id", "ünïcode", "new\nline", strings.Repeat("n", 256)} {
		rec := post(bad)
		assert.Equal(t, http.StatusBadRequest, rec.Code, "nodeId %q", bad)
		assert.Contains(t, rec.Body.String(), "nodeId must match ^[a-zA-Z0-9_-]{1,255}$", "nodeId %q", bad)
	}
	assert.Empty(t, e.Tasks(), "a task was created with an invalid node id")

	for _, good := range []string{"node_1-A", strings.Repeat("n", 255), ""} {
		rec := post(good)
		require.Equal(t, http.StatusCreated, rec.Code, "nodeId %q: %s", good, rec.Body.String())
		var task Task
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &task))
		if good != "" {
			assert.Equal(t, good, task.NodeID)
		}
		assert.True(t, domain.ValidID(task.NodeID), "node id %q", task.NodeID)
	}
}

// TestSubmitFlagsATypeNoExecutorServes: a task for a type no registered
// executor serves (a typo, a type not deployed yet) is accepted, since one
// may register later, but the answer says it will wait; one for a served
// type carries no warning.
func TestSubmitFlagsATypeNoExecutorServes(t *testing.T) {
	e := New(Config{})
	e.Register(Executor{ID: "a", Type: "calculate-tax", SupportedNodeTypes: []string{"tax-node"}, CommunicationType: "GRPC", MaxConcurrent: 1})
	handler := NewHTTP(e, nil, nil, slog.New(slog.DiscardHandler)).Handler()
	submit := func(body string) map[string]any {
		t.Helper()
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/tasks", strings.NewReader(body)))
		require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
		var answer map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &answer))
		require.NotEmpty(t, answer["taskId"])
		return answer
	}
	unknown := submit(`{"executorType": "calculate-taxes", "context": {}}`)
	assert.Contains(t, unknown["warning"], `executor type "calculate-taxes"`)
	assert.Contains(t, unknown["warning"], "PENDING")
	assert.Contains(t, submit(`{"nodeType": "fax", "context": {}}`)["warning"], `node type "fax"`)
	assert.NotContains(t, submit(`{"executorType": "calculate-tax", "context": {}}`), "warning")
	assert.NotContains(t, submit(`{"nodeType": "tax-node", "context": {}}`), "warning")
}
