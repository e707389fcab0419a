package service

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/executor"
)

// The warning is checked through the service's own start-up, with the
// in-process transport and a context already ended, so that it is the log
// line an operator would read.
func TestStartUpWarnsWhenTheShutdownBudgetExceedsTheGracePeriod(t *testing.T) {
	const warning = "shutdown budget exceeds the termination grace period"
	for _, c := range []struct {
		name  string
		vars  map[string]string
		warns bool
	}{
		{"grace period unknown", map[string]string{}, false},
		{"preStop, drain and flush fit", map[string]string{
			"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS": "50", "GAMELAN_EXECUTOR_PRE_STOP_SECONDS": "5",
			"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "30", "GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS": "10"}, false},
		{"the drain alone is longer than the grace period", map[string]string{
			"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS": "30", "GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "60"}, true},
		{"the preStop tips it over", map[string]string{
			"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS": "44", "GAMELAN_EXECUTOR_PRE_STOP_SECONDS": "5"}, true},
	} {
		vars := map[string]string{
			"GAMELAN_EXECUTOR_TRANSPORT": "memory", "GAMELAN_EXECUTOR_REGISTRAR": "memory",
			"GAMELAN_EXECUTOR_HTTP_HOST": "127.0.0.1", "GAMELAN_EXECUTOR_HTTP_PORT": "0",
		}
		for k, v := range c.vars {
			vars[k] = v
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // start up, log, and stop at once
		var stdout, stderr bytes.Buffer
		hosted := []executor.Executor{fixedExecutor{domain.Descriptor{Type: "a"}}}
		err := RunHosting(ctx, nil, func(name string) string { return vars[name] }, &stdout, &stderr, hosted)
		require.NoError(t, err, c.name)
		require.Contains(t, stdout.String(), "starting executor service", c.name)
		if c.warns {
			assert.Contains(t, stdout.String(), warning, c.name)
			assert.Contains(t, stdout.String(), `"termination_grace_period_seconds"`, c.name)
		} else {
			assert.NotContains(t, stdout.String(), warning, c.name)
		}
	}
}

func TestHealthcheckFlagSucceedsOnlyOn200(t *testing.T) {
	status := http.StatusOK
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "/q/health/ready", r.URL.Path)
		w.WriteHeader(status)
	}))
	defer server.Close()
	run := func() error {
		var stdout, stderr bytes.Buffer
		// No variable is read: the probe must work whatever the environment.
		return Run(context.Background(), []string{"-healthcheck", server.URL + "/q/health/ready"},
			func(string) string { return "bad value" }, &stdout, &stderr)
	}
	require.NoError(t, run())
	status = http.StatusServiceUnavailable
	assert.ErrorContains(t, run(), "503")
	server.Close()
	assert.Error(t, run(), "nothing listening")
}
