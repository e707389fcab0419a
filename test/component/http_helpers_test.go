package component

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
)

// The helpers of the tests of the service registered over HTTP
// (REGISTRAR=rest) with a resttest registry, and of its REST intake.

// httpRegistrarEnv registers over HTTP with registry, heartbeating every
// second with requests that time out after a second, at info level.
func httpRegistrarEnv(registry *resttest.Registry) map[string]string {
	vars := baseEnv()
	vars["GAMELAN_EXECUTOR_LOG_LEVEL"] = "info"
	vars["GAMELAN_EXECUTOR_REGISTRAR"] = "rest"
	vars["GAMELAN_EXECUTOR_ENGINE_URL"] = registry.URL()
	vars["GAMELAN_EXECUTOR_ENGINE_HTTP_TIMEOUT_SECONDS"] = "1"
	vars["GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS"] = "1"
	return vars
}

// waitForRegistry waits until cond holds for registry, failing t with what,
// the registry's requests and the service's logs.
func waitForRegistry(t *testing.T, r *running, registry *resttest.Registry, what string, cond func() bool) {
	t.Helper()
	if err := registry.WaitFor(deadline(t, conditionTimeout), cond); err != nil {
		t.Fatalf("waited for %s: %v\nregistry requests:\n%s\nlogs:\n%s", what, err, registryRequests(registry), r.logs.text())
	}
}

// registryRequests renders the registry's requests, one a line.
func registryRequests(registry *resttest.Registry) string {
	var b strings.Builder
	for _, req := range registry.Requests() {
		b.WriteString(req.Time.Format("15:04:05.000") + " " + req.Method + " " + req.Path + " ")
		switch {
		case req.Abandoned():
			b.WriteString("abandoned\n")
		case req.Ended.IsZero():
			b.WriteString("in progress\n")
		default:
			b.WriteString(http.StatusText(req.Status) + "\n")
		}
	}
	return b.String()
}

// registryRequestsWhere returns the requests of the registry for which keep
// holds.
func registryRequestsWhere(registry *resttest.Registry, keep func(resttest.Request) bool) []resttest.Request {
	var out []resttest.Request
	for _, req := range registry.Requests() {
		if keep(req) {
			out = append(out, req)
		}
	}
	return out
}

// isRegistration reports whether req registers executorID.
func isRegistration(req resttest.Request, executorID string) bool {
	return req.Method == http.MethodPost && req.Path == "/api/v1/executors" && req.ExecutorID == executorID
}

// isHeartbeat reports whether req is a heartbeat of executorID.
func isHeartbeat(req resttest.Request, executorID string) bool {
	return req.Method == http.MethodPost && req.ExecutorID == executorID && strings.HasSuffix(req.Path, "/heartbeat")
}

// listedExecutors GETs /api/v1/executors of the registry, as an operator or
// the engine's console would, with "Bearer token" unless token is empty.
func listedExecutors(t *testing.T, registry *resttest.Registry, token string) []resttest.ExecutorInfo {
	t.Helper()
	req, err := http.NewRequestWithContext(deadline(t, conditionTimeout), http.MethodGet, registry.URL()+"/api/v1/executors", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var list []resttest.ExecutorInfo
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	return list
}

// waitForLogWhere waits until the service logs a line for which match holds,
// and returns it.
func waitForLogWhere(t *testing.T, logs *logLines, what string, match func(line map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(conditionTimeout)
	for {
		logs.mu.Lock()
		for _, line := range logs.lines {
			if match(line) {
				logs.mu.Unlock()
				return line
			}
		}
		changed := logs.changed
		logs.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("no log line with %s; got:\n%s", what, logs.text())
		}
	}
}

// waitForReadiness waits until /q/health/ready answers want, failing t
// with the registry's requests and the service's logs.
func waitForReadiness(t *testing.T, r *running, registry *resttest.Registry, want int) {
	t.Helper()
	timeout := time.After(conditionTimeout)
	tick := time.NewTicker(conditionTick)
	defer tick.Stop()
	for {
		resp, err := http.Get(r.baseURL + "/q/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("/q/health/ready never answered %d\nregistry requests:\n%s\nlogs:\n%s", want, registryRequests(registry), r.logs.text())
		}
	}
}

// readinessReason returns the status of /q/health/ready and the error of its
// executor check.
func readinessReason(t *testing.T, baseURL string) (int, string) {
	t.Helper()
	code, body := probe(t, baseURL, "/q/health/ready")
	for _, check := range body.Checks {
		if check.Name == "executor" {
			reason, _ := check.Data["error"].(string)
			return code, reason
		}
	}
	return code, ""
}
