package service

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/version"
)

// TestVersionFlagPrintsTheBuildWithoutReadingTheConfiguration: -version
// answers on any image whatever its environment, even one the service
// would refuse to start with.
func TestVersionFlagPrintsTheBuildWithoutReadingTheConfiguration(t *testing.T) {
	saved := [3]string{version.Version, version.Commit, version.BuildDate}
	t.Cleanup(func() { version.Version, version.Commit, version.BuildDate = saved[0], saved[1], saved[2] })
	version.Version, version.Commit, version.BuildDate = "1.4.0", "feedface", "2026-12-05T17:00:00Z"

	env := map[string]string{"GAMELAN_EXECUTOR_THREAD_POOL_SIZE": "-3"} // Run refuses this
	var stdout, stderr strings.Builder
	err := Run(t.Context(), []string{"-version"}, func(k string) string { return env[k] }, &stdout, &stderr)
	require.NoError(t, err)
	lines := strings.Split(stdout.String(), "\n")
	require.GreaterOrEqual(t, len(lines), 5, stdout.String())
	assert.Equal(t, []string{"executor", "version: 1.4.0", "commit: feedface", "build date: 2026-12-05T17:00:00Z"}, lines[:4])
	assert.True(t, strings.HasPrefix(lines[4], "go: go1."), lines[4])
	assert.Empty(t, stderr.String())

	// The same environment without -version is refused: the flag, not a
	// lenient environment, is what skipped the configuration.
	err = Run(t.Context(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
	assert.ErrorContains(t, err, "GAMELAN_EXECUTOR_THREAD_POOL_SIZE")
}
