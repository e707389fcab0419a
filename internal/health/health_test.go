package health_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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

func TestProbesAreNotCachedAndSayTheirLength(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddLiveness("runtime", func() error { return nil })
	for _, path := range []string{health.LivePath, health.ReadyPath, health.HealthPath} {
		status, header, body := get(t, http.MethodGet, serve(t, probes)+path)
		assert.Equal(t, http.StatusOK, status, path)
		assert.Equal(t, "no-store", header.Get("Cache-Control"), path)
		assert.Equal(t, strconv.Itoa(len(body)), header.Get("Content-Length"), path)
	}
}

func TestErrorsThatLookHealthyAreReplacedByAnExplanation(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddReadiness("ok-text", func() error { return errors.New("OK") })
	probes.AddReadiness("no-text", func() error { return errors.New("") })
	_, _, body := get(t, http.MethodGet, serve(t, probes)+health.ReadyPath)

	assert.JSONEq(t, `{"status":"DOWN","checks":[
		{"name":"no-text","status":"DOWN","data":{"error":"check failed with error text \"\""}},
		{"name":"ok-text","status":"DOWN","data":{"error":"check failed with error text \"OK\""}}]}`, string(body))
}

func TestRegisteringANameAgainReplacesTheCheck(t *testing.T) {
	probes := health.New(time.Second)
	probes.AddLiveness("runtime", func() error { return errors.New("old liveness") })
	probes.AddLiveness("runtime", func() error { return nil })
	probes.AddReadiness("intake", func() error { return nil })
	probes.AddReadiness("intake", func() error { return errors.New("new readiness") })
	_, _, body := get(t, http.MethodGet, serve(t, probes)+health.ReadyPath)

	assert.JSONEq(t, `{"status":"DOWN","checks":[
		{"name":"intake","status":"DOWN","data":{"error":"new readiness"}},
		{"name":"runtime","status":"UP"}]}`, string(body))
}

// A name registered as both kinds breaks the documented rule; this pins what
// happens then: both checks run, either failing makes the probe DOWN, and the
// liveness check's outcome is the one listed.
func TestANameOfBothKindsListsTheLivenessOutcome(t *testing.T) {
	var readinessRuns atomic.Int32
	probes := health.New(time.Second)
	probes.AddLiveness("shared", func() error { return errors.New("liveness failed") })
	probes.AddReadiness("shared", func() error { readinessRuns.Add(1); return nil })
	status, _, body := get(t, http.MethodGet, serve(t, probes)+health.ReadyPath)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"DOWN","checks":[{"name":"shared","status":"DOWN","data":{"error":"liveness failed"}}]}`, string(body))
	assert.Equal(t, int32(1), readinessRuns.Load())

	probes = health.New(time.Second)
	probes.AddLiveness("shared", func() error { return nil })
	probes.AddReadiness("shared", func() error { return errors.New("readiness failed") })
	status, _, body = get(t, http.MethodGet, serve(t, probes)+health.ReadyPath)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"DOWN","checks":[{"name":"shared","status":"UP"}]}`, string(body))
}

func TestChecksCanBeAddedWhileProbesAreAnswered(t *testing.T) {
	probes := health.New(time.Second)
	url := serve(t, probes)
	const added = 20
	var probing sync.WaitGroup
	for range 4 {
		probing.Go(func() {
			for range added { // assert, not require: this is not the test's goroutine
				response, err := http.Get(url + health.ReadyPath)
				if !assert.NoError(t, err) {
					return
				}
				var body health.Response
				assert.NoError(t, json.NewDecoder(response.Body).Decode(&body))
				response.Body.Close()
				assert.Equal(t, http.StatusOK, response.StatusCode)
				assert.Equal(t, health.StatusUp, body.Status)
			}
		})
	}
	for i := range added {
		probes.AddLiveness(fmt.Sprintf("live-%02d", i), func() error { return nil })
		probes.AddReadiness(fmt.Sprintf("ready-%02d", i), func() error { return nil })
	}
	probing.Wait()

	_, _, body := get(t, http.MethodGet, url+health.ReadyPath)
	assert.Len(t, decode(t, body).Checks, 2*added)
}

// TestStartedProbeEvaluatesOnlyTheStartupChecks: /q/health/started follows
// the start-up checks alone, and the other probes never evaluate them, so a
// process still starting is neither restarted (liveness) for it nor held
// DOWN by it once started.
func TestStartedProbeEvaluatesOnlyTheStartupChecks(t *testing.T) {
	probes := health.New(time.Second)
	var started atomic.Bool
	probes.AddStartup("initialized", func() error {
		if !started.Load() {
			return errors.New("running the Initialize hooks")
		}
		return nil
	})
	probes.AddLiveness("runtime", func() error { return nil })
	probes.AddReadiness("executor", func() error { return errors.New("not registered") })
	url := serve(t, probes)

	status, _, body := get(t, http.MethodGet, url+health.StartedPath)
	assert.Equal(t, http.StatusServiceUnavailable, status)
	assert.JSONEq(t, `{"status":"DOWN","checks":[{"name":"initialized","status":"DOWN","data":{"error":"running the Initialize hooks"}}]}`, string(body))
	status, _, body = get(t, http.MethodGet, url+health.LivePath)
	assert.Equal(t, http.StatusOK, status, "a start-up check is not a liveness check")
	assert.NotContains(t, string(body), "initialized")

	started.Store(true)
	status, _, body = get(t, http.MethodGet, url+health.StartedPath)
	assert.Equal(t, http.StatusOK, status, "started whatever readiness says")
	assert.JSONEq(t, `{"status":"UP","checks":[{"name":"initialized","status":"UP"}]}`, string(body))
}
