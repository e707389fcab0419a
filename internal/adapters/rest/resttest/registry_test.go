package resttest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
)

// waitTimeout bounds every wait for a condition.
const waitTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// call sends one request to the registry and returns the status and body.
func call(t *testing.T, client *http.Client, method, url, body, token string) (int, string) {
	t.Helper()
	status, answer, err := try(t, client, method, url, body, token)
	require.NoError(t, err, "%s %s", method, url)
	return status, answer
}

func try(t *testing.T, client *http.Client, method, url, body, token string) (int, string, error) {
	t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testContext(t), method, url, reader)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(answer), nil
}

func infoJSON(t *testing.T, info resttest.ExecutorInfo) string {
	t.Helper()
	b, err := json.Marshal(info)
	require.NoError(t, err)
	return string(b)
}

func taxInfo(id, endpoint string) resttest.ExecutorInfo {
	return resttest.ExecutorInfo{
		ExecutorID: id, ExecutorType: "calculate-tax", CommunicationType: "KAFKA",
		Endpoint: endpoint, Timeout: 300, Metadata: map[string]string{"version": "1.0.0"},
	}
}

func decodeList(t *testing.T, body string) []resttest.ExecutorInfo {
	t.Helper()
	var list []resttest.ExecutorInfo
	require.NoError(t, json.Unmarshal([]byte(body), &list), body)
	return list
}

func TestRoutes(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"

	status, body := call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "workflow.tasks")), "")
	require.Equal(t, http.StatusOK, status, body)
	status, body = call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "other.topic")), "")
	require.Equal(t, http.StatusOK, status, body)
	status, body = call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("pay-1", "workflow.tasks")), "")
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, 2, reg.RegisterCalls("tax-1"), "registrations of tax-1")

	// Re-registration replaces: one entry, the latest fields.
	status, body = call(t, nil, http.MethodGet, base, "", "")
	require.Equal(t, http.StatusOK, status)
	list := decodeList(t, body)
	require.Len(t, list, 2, body)
	assert.Equal(t, "pay-1", list[0].ExecutorID, "ordered by id")
	assert.Equal(t, taxInfo("tax-1", "other.topic"), list[1])

	status, body = call(t, nil, http.MethodGet, base+"/tax-1", "", "")
	require.Equal(t, http.StatusOK, status)
	var one resttest.ExecutorInfo
	require.NoError(t, json.Unmarshal([]byte(body), &one))
	assert.Equal(t, taxInfo("tax-1", "other.topic"), one)

	status, _ = call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
	assert.Equal(t, http.StatusOK, status, "heartbeat of a known executor")
	assert.Len(t, reg.Heartbeats("tax-1"), 1)
	status, _ = call(t, nil, http.MethodPost, base+"/nobody/heartbeat", "", "")
	assert.Equal(t, http.StatusNotFound, status, "heartbeat of an unknown executor")
	assert.Empty(t, reg.Heartbeats("nobody"))

	status, body = call(t, nil, http.MethodGet, base+"/healthy", "", "")
	require.Equal(t, http.StatusOK, status)
	assert.Len(t, decodeList(t, body), 2, "healthy: both registered just now")

	status, _ = call(t, nil, http.MethodDelete, base+"/tax-1", "", "")
	assert.Equal(t, http.StatusNoContent, status)
	status, _ = call(t, nil, http.MethodDelete, base+"/tax-1", "", "")
	assert.Equal(t, http.StatusNotFound, status, "unregister twice")
	status, _ = call(t, nil, http.MethodGet, base+"/tax-1", "", "")
	assert.Equal(t, http.StatusNotFound, status, "lookup after unregister")
	_, ok := reg.Executor("tax-1")
	assert.False(t, ok)
}

func TestBadRequests(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"
	for name, body := range map[string]string{
		"not JSON":              `{"executorId":`,
		"no executor id":        `{"executorType":"x","communicationType":"KAFKA"}`,
		"no executor type":      `{"executorId":"a","communicationType":"KAFKA"}`,
		"unknown communication": `{"executorId":"a","communicationType":"kafka"}`,
		"metadata not strings":  `{"executorId":"a","communicationType":"KAFKA","metadata":{"n":1}}`,
	} {
		status, answer := call(t, nil, http.MethodPost, base, body, "")
		assert.Equal(t, http.StatusBadRequest, status, "%s: %s", name, answer)
	}
	assert.Empty(t, reg.Executors())

	status, _ := call(t, nil, http.MethodPut, base, "{}", "")
	assert.Equal(t, http.StatusMethodNotAllowed, status)
	status, _ = call(t, nil, http.MethodGet, reg.URL()+"/api/v2/executors", "", "")
	assert.Equal(t, http.StatusNotFound, status)
}

func TestGamelanModeAnswersHeartbeatsOfForgottenExecutors(t *testing.T) {
	reg := resttest.Start(t, resttest.GamelanMode())
	base := reg.URL() + "/api/v1/executors"
	call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	reg.Forget("tax-1")

	status, _ := call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
	assert.Equal(t, http.StatusOK, status, "Gamelan answers heartbeats of executors it forgot")
	assert.Empty(t, reg.Heartbeats("tax-1"), "a heartbeat of an unknown executor is not recorded")
	status, _ = call(t, nil, http.MethodGet, base+"/tax-1", "", "")
	assert.Equal(t, http.StatusNotFound, status, "only the lookup reveals it")
	assert.Equal(t, 1, reg.RegisterCalls("tax-1"), "Forget keeps the records")
}

func TestForgetMakesHeartbeatsNotFound(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"
	call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	status, _ := call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
	require.Equal(t, http.StatusOK, status)
	reg.Forget("tax-1")
	status, _ = call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
	assert.Equal(t, http.StatusNotFound, status)
}

func TestHealthyListsRecentExecutorsOnly(t *testing.T) {
	reg := resttest.Start(t, resttest.WithHealthyWithin(50*time.Millisecond))
	base := reg.URL() + "/api/v1/executors"
	call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	require.Eventually(t, func() bool {
		_, body := call(t, nil, http.MethodGet, base+"/healthy", "", "")
		return len(decodeList(t, body)) == 0
	}, waitTimeout, 5*time.Millisecond, "tax-1 stayed healthy without heartbeats")
	call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
	_, body := call(t, nil, http.MethodGet, base+"/healthy", "", "")
	list := decodeList(t, body)
	require.Len(t, list, 1, "a heartbeat makes it healthy again")
	assert.Equal(t, "tax-1", list[0].ExecutorID)
}

func TestRecordsEveryRequest(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"
	before := time.Now()
	call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "token-a")
	call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "token-b")
	call(t, nil, http.MethodGet, base+"/healthy", "", "")
	call(t, nil, http.MethodDelete, base+"/tax%2D1", "", "token-c")

	requests := reg.Requests()
	require.Len(t, requests, 4)
	want := []struct {
		method, path, id, auth string
		status                 int
	}{
		{http.MethodPost, "/api/v1/executors", "tax-1", "Bearer token-a", 200},
		{http.MethodPost, "/api/v1/executors/tax-1/heartbeat", "tax-1", "Bearer token-b", 200},
		{http.MethodGet, "/api/v1/executors/healthy", "", "", 200},
		{http.MethodDelete, "/api/v1/executors/tax%2D1", "tax-1", "Bearer token-c", 204},
	}
	for i, w := range want {
		got := requests[i]
		assert.Equal(t, w.method, got.Method, "request %d", i)
		assert.Equal(t, w.path, got.Path, "request %d", i)
		assert.Equal(t, w.id, got.ExecutorID, "request %d", i)
		assert.Equal(t, w.auth, got.Authorization, "request %d", i)
		assert.Equal(t, w.status, got.Status, "request %d", i)
		assert.False(t, got.Time.Before(before), "request %d: arrival time", i)
		assert.False(t, got.Ended.Before(got.Time), "request %d: end time", i)
		assert.False(t, got.Abandoned(), "request %d", i)
	}
}

func TestAuthRefusesWith401(t *testing.T) {
	reg := resttest.Start(t, resttest.WithAuth(func(token string) error {
		if token != "good" {
			return errors.New("bad token")
		}
		return nil
	}))
	base := reg.URL() + "/api/v1/executors"
	status, body := call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	assert.Equal(t, http.StatusUnauthorized, status, body)
	status, _ = call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "bad")
	assert.Equal(t, http.StatusUnauthorized, status)
	assert.Empty(t, reg.Executors(), "a refused registration is not stored")
	status, _ = call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "good")
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, 2, reg.Refused())
}

func TestFailNext(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"
	reg.FailNext(2, http.StatusInternalServerError)
	for i := range 2 {
		status, body := call(t, nil, http.MethodGet, base, "", "")
		assert.Equal(t, http.StatusInternalServerError, status, "request %d", i)
		assert.Contains(t, body, "injected failure")
	}
	status, _ := call(t, nil, http.MethodGet, base, "", "")
	assert.Equal(t, http.StatusOK, status, "after the injected failures")

	reg.FailNextWithBody(5, http.StatusTooManyRequests, "slow down")
	status, body := call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "slow down", body)
	assert.Empty(t, reg.Executors(), "a failed registration is not stored")
	reg.FailNext(0, 0)
	status, _ = call(t, nil, http.MethodGet, base, "", "")
	assert.Equal(t, http.StatusOK, status, "FailNext(0) clears")
}

func TestFailHeartbeats(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"
	call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	reg.FailHeartbeats(http.StatusGone)
	for range 2 {
		status, _ := call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
		assert.Equal(t, http.StatusGone, status)
	}
	status, _ := call(t, nil, http.MethodGet, base+"/tax-1", "", "")
	assert.Equal(t, http.StatusOK, status, "only heartbeats fail")
	assert.Empty(t, reg.Heartbeats("tax-1"))
	reg.FailHeartbeats(0)
	status, _ = call(t, nil, http.MethodPost, base+"/tax-1/heartbeat", "", "")
	assert.Equal(t, http.StatusOK, status)
}

func TestHangMakesClientsTimeOut(t *testing.T) {
	reg := resttest.Start(t)
	base := reg.URL() + "/api/v1/executors"
	reg.Hang(time.Hour)
	client := &http.Client{Timeout: 100 * time.Millisecond}
	_, _, err := try(t, client, http.MethodGet, base, "", "")
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	assert.True(t, netErr.Timeout(), "%v", err)
	require.NoError(t, reg.WaitFor(testContext(t), func() bool {
		requests := reg.Requests()
		return len(requests) == 1 && requests[0].Abandoned()
	}), "the held request never ended: %+v", reg.Requests())

	reg.Hang(20 * time.Millisecond)
	start := time.Now()
	status, _ := call(t, nil, http.MethodGet, base, "", "")
	assert.Equal(t, http.StatusOK, status)
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond, "held for the Hang duration")

	reg.Hang(0)
	status, _ = call(t, client, http.MethodGet, base, "", "")
	assert.Equal(t, http.StatusOK, status, "after Hang(0)")
}

func TestStopAndRestartOnTheSamePort(t *testing.T) {
	reg := resttest.Start(t)
	addr := reg.Addr()
	base := reg.URL() + "/api/v1/executors"
	call(t, nil, http.MethodPost, base, infoJSON(t, taxInfo("tax-1", "t")), "")
	client := &http.Client{Transport: &http.Transport{}} // keeps its connection across the stop

	status, _ := call(t, client, http.MethodGet, base, "", "")
	require.Equal(t, http.StatusOK, status)
	reg.Stop()
	reg.Stop() // idempotent
	_, _, err := try(t, client, http.MethodGet, base, "", "")
	require.Error(t, err, "a stopped registry is unreachable")
	var opErr *net.OpError
	_, _, err = try(t, nil, http.MethodGet, base, "", "")
	require.ErrorAs(t, err, &opErr, "a fresh connection is refused")
	requests := len(reg.Requests())

	reg.Restart(t)
	assert.Equal(t, addr, reg.Addr(), "same port")
	status, body := call(t, client, http.MethodGet, base+"/tax-1", "", "")
	assert.Equal(t, http.StatusOK, status, "state kept across the restart: %s", body)
	assert.Len(t, reg.Requests(), requests+1, "nothing recorded while stopped")
}

func TestStopReleasesHeldRequests(t *testing.T) {
	reg := resttest.Start(t)
	reg.Hang(time.Hour)
	failed := make(chan error, 1)
	go func() {
		req, err := http.NewRequest(http.MethodGet, reg.URL()+"/api/v1/executors", nil)
		if err == nil {
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		failed <- err
	}()
	require.NoError(t, reg.WaitFor(testContext(t), func() bool { return len(reg.Requests()) == 1 }))

	stopped := make(chan struct{})
	go func() { reg.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("Stop waited for a held request")
	}
	assert.True(t, reg.Requests()[0].Abandoned(), "%+v", reg.Requests()[0])
	select {
	case err := <-failed:
		assert.Error(t, err, "the held request was answered")
	case <-time.After(waitTimeout):
		t.Fatal("the client of a held request got no error after Stop")
	}
}

func TestWaitFor(t *testing.T) {
	reg := resttest.Start(t)
	url, body := reg.URL()+"/api/v1/executors", infoJSON(t, taxInfo("tax-1", "t"))
	go func() {
		if resp, err := http.Post(url, "application/json", strings.NewReader(body)); err == nil {
			resp.Body.Close()
		}
	}()
	require.NoError(t, reg.WaitFor(testContext(t), func() bool { return reg.RegisterCalls("tax-1") == 1 }))

	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("enough")
	cancel(cause)
	assert.ErrorIs(t, reg.WaitFor(ctx, func() bool { return false }), cause)
}

func TestPostTask(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan string, 1)
	intake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(body)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"accepted":true}`)
	}))
	t.Cleanup(intake.Close)

	answer, err := resttest.PostTask(testContext(t), nil, intake.URL+"/api/v1/tasks", resttest.TaskPost{
		ExecutorID: "exec-1", RunID: "run-1", NodeID: "node-1", Attempt: 2,
		IdempotencyKey: "idem-1", Signature: "sig-1", Token: "tok-1",
		Body:   []byte(`{"amount":1}`),
		Header: http.Header{"X-Extra": {"yes"}, "X-Signature": nil},
	})
	require.NoError(t, err)
	assert.Equal(t, http.StatusAccepted, answer.Status)
	assert.Equal(t, `{"accepted":true}`, answer.Body)
	req := <-got
	assert.Equal(t, http.MethodPost, req.Method)
	assert.Equal(t, "/api/v1/tasks", req.URL.Path)
	for key, want := range map[string]string{
		"X-Executor-Id": "exec-1", "X-Run-Id": "run-1", "X-Node-Id": "node-1", "X-Attempt": "2",
		"X-Idempotency-Key": "idem-1", "X-Signature": "", "Authorization": "Bearer tok-1",
		"Content-Type": "application/json", "X-Extra": "yes",
	} {
		assert.Equal(t, want, req.Header.Get(key), key)
	}
	assert.Equal(t, `{"amount":1}`, <-bodies)

	_, err = resttest.PostTask(testContext(t), nil, intake.URL, resttest.TaskPost{RunID: "r", NodeID: "n"})
	require.NoError(t, err)
	req = <-got
	assert.Empty(t, <-bodies, "no body")
	assert.Empty(t, req.Header.Get("Content-Type"))
	assert.Empty(t, req.Header.Get("Authorization"))
}
