package health_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/health"
)

// serve mounts probes on a loopback server that is closed when the test ends.
func serve(t *testing.T, probes *health.Probes) string {
	t.Helper()
	mux := http.NewServeMux()
	probes.Register(mux)
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	return server.URL
}

// get requests path and returns the status code, the headers and the body.
func get(t *testing.T, method, url string) (int, http.Header, []byte) {
	t.Helper()
	request, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	client := &http.Client{Timeout: 10 * time.Second}
	response, err := client.Do(request)
	require.NoError(t, err)
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	require.NoError(t, err)
	return response.StatusCode, response.Header, body
}

func decode(t *testing.T, body []byte) health.Response {
	t.Helper()
	var response health.Response
	require.NoError(t, json.Unmarshal(body, &response), "body: %s", body)
	return response
}

func TestProbesAnswerSmallRyeJSON(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddLiveness("runtime", func() error { return nil })
	probes.AddReadiness("registered", func() error { return nil })
	probes.AddReadiness("intake", func() error { return errors.New("task source not connected") })
	url := serve(t, probes)

	status, header, body := get(t, http.MethodGet, url+health.LivePath)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "application/json", header.Get("Content-Type"))
	assert.JSONEq(t, `{"status":"UP","checks":[{"name":"runtime","status":"UP"}]}`, string(body))

	want := `{"status":"DOWN","checks":[
		{"name":"intake","status":"DOWN","data":{"error":"task source not connected"}},
		{"name":"registered","status":"UP"},
		{"name":"runtime","status":"UP"}]}`
	for _, path := range []string{health.ReadyPath, health.HealthPath} {
		status, header, body = get(t, http.MethodGet, url+path)
		assert.Equal(t, http.StatusServiceUnavailable, status, path)
		assert.Equal(t, "application/json", header.Get("Content-Type"), path)
		assert.JSONEq(t, want, string(body), path)
	}
}

func TestProbesSortChecksByName(t *testing.T) {
	probes := health.New(time.Second)
	names := []string{"zeta", "alpha", "mu", "beta", "omega"}
	for _, name := range names {
		probes.AddReadiness(name, func() error { return nil })
	}
	status, _, body := get(t, http.MethodGet, serve(t, probes)+health.HealthPath)
	require.Equal(t, http.StatusOK, status)

	response := decode(t, body)
	assert.Equal(t, health.StatusUp, response.Status)
	var got []string
	for _, check := range response.Checks {
		got = append(got, check.Name)
		assert.Equal(t, health.StatusUp, check.Status)
		assert.Nil(t, check.Data)
	}
	assert.Equal(t, []string{"alpha", "beta", "mu", "omega", "zeta"}, got)
}

func TestLivenessFailureMakesEveryProbeDown(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddLiveness("runtime", func() error { return errors.New("worker pool stopped") })
	probes.AddReadiness("intake", func() error { return nil })
	url := serve(t, probes)

	for _, path := range []string{health.LivePath, health.ReadyPath, health.HealthPath} {
		status, _, body := get(t, http.MethodGet, url+path)
		assert.Equal(t, http.StatusServiceUnavailable, status, path)
		assert.Equal(t, health.StatusDown, decode(t, body).Status, path)
	}
}

func TestReadinessFollowsItsCheck(t *testing.T) {
	var ready atomic.Bool
	probes := health.New(time.Second)
	probes.AddReadiness("draining", func() error {
		if !ready.Load() {
			return errors.New("draining")
		}
		return nil
	})
	url := serve(t, probes) + health.ReadyPath

	status, _, _ := get(t, http.MethodGet, url)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	ready.Store(true)
	status, _, _ = get(t, http.MethodGet, url)
	assert.Equal(t, http.StatusOK, status)

	status, _, body := get(t, http.MethodGet, serve(t, probes)+health.LivePath)
	assert.Equal(t, http.StatusOK, status, "readiness checks are not liveness checks")
	assert.JSONEq(t, `{"status":"UP","checks":[]}`, string(body))
}

func TestHungCheckIsDownWithinTheTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })

	const checkTimeout = 50 * time.Millisecond
	probes := health.New(checkTimeout)
	probes.AddLiveness("runtime", func() error { return nil })
	probes.AddReadiness("engine", func() error {
		<-release
		return nil
	})
	url := serve(t, probes)

	started := time.Now()
	status, _, body := get(t, http.MethodGet, url+health.ReadyPath)
	elapsed := time.Since(started)

	assert.Equal(t, http.StatusServiceUnavailable, status)
	response := decode(t, body)
	require.Len(t, response.Checks, 2)
	assert.Equal(t, health.CheckResponse{
		Name:   "engine",
		Status: health.StatusDown,
		Data:   map[string]string{"error": "timed out after 50ms"},
	}, response.Checks[0])
	assert.Less(t, elapsed, 5*time.Second, "the probe must not wait for the hung check")
}

func TestPanickingCheckIsDown(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddLiveness("runtime", func() error { panic("boom") })
	status, _, body := get(t, http.MethodGet, serve(t, probes)+health.LivePath)

	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"DOWN","checks":[{"name":"runtime","status":"DOWN","data":{"error":"check panicked: boom"}}]}`, string(body))
}

func TestErrorsThatLookHealthyAreDown(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddReadiness("ok-text", func() error { return errors.New("OK") })
	probes.AddReadiness("no-text", func() error { return errors.New("") })
	status, _, body := get(t, http.MethodGet, serve(t, probes)+health.ReadyPath)

	assert.Equal(t, http.StatusServiceUnavailable, status)
	for _, check := range decode(t, body).Checks {
		assert.Equal(t, health.StatusDown, check.Status, check.Name)
		assert.NotEmpty(t, check.Data["error"], check.Name)
	}
}

func TestNoChecksIsUp(t *testing.T) {
	url := serve(t, health.New(0))
	for _, path := range []string{health.LivePath, health.ReadyPath, health.HealthPath} {
		status, _, body := get(t, http.MethodGet, url+path)
		assert.Equal(t, http.StatusOK, status, path)
		assert.JSONEq(t, `{"status":"UP","checks":[]}`, string(body), path)
	}
}

func TestHeadAnswersStatusWithoutBody(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddReadiness("intake", func() error { return errors.New("not connected") })
	url := serve(t, probes)

	status, header, body := get(t, http.MethodHead, url+health.LivePath)
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "application/json", header.Get("Content-Type"))
	assert.Empty(t, body)

	status, _, body = get(t, http.MethodHead, url+health.ReadyPath)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.Empty(t, body)
}

func TestOtherMethodsAreNotAllowed(t *testing.T) {
	url := serve(t, health.New(time.Second))
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		for _, path := range []string{health.LivePath, health.ReadyPath, health.HealthPath} {
			status, header, _ := get(t, method, url+path)
			assert.Equal(t, http.StatusMethodNotAllowed, status, method+" "+path)
			assert.True(t, strings.Contains(header.Get("Allow"), "GET"), method+" "+path)
		}
	}
}
