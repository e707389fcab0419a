package devengine

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/version"
)

// TestVersionFlagPrintsTheBuildAndStartsNothing: -version prints the
// stamped build and returns before any listener opens, so that it answers
// even where the engine's ports are taken or its variables are wrong.
func TestVersionFlagPrintsTheBuildAndStartsNothing(t *testing.T) {
	saved := [3]string{version.Version, version.Commit, version.BuildDate}
	t.Cleanup(func() { version.Version, version.Commit, version.BuildDate = saved[0], saved[1], saved[2] })
	version.Version, version.Commit, version.BuildDate = "1.4.0", "feedface", "2026-12-05T17:00:00Z"

	var out strings.Builder
	// An address no listener can take would stop a real start; -version
	// must return before it is used.
	env := map[string]string{"DEVENGINE_HTTP_ADDR": "not-an-address"}
	err := Run(t.Context(), []string{"-version"}, func(k string) string { return env[k] }, &out, &out)
	require.NoError(t, err)
	lines := strings.Split(out.String(), "\n")
	require.GreaterOrEqual(t, len(lines), 5, out.String())
	assert.Equal(t, "devengine", lines[0])
	assert.Equal(t, "version: 1.4.0", lines[1])
	assert.Equal(t, "commit: feedface", lines[2])
	assert.Equal(t, "build date: 2026-12-05T17:00:00Z", lines[3])
	assert.True(t, strings.HasPrefix(lines[4], "go: go1."), lines[4])
}
