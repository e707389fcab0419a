package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnparsableURLCredentialsAreRedacted is the regression test of issue
// 14: a URL that does not parse was quoted whole in the configuration
// error, so a password holding an unescaped %, # or / (an easy mistake)
// was printed at start-up. Every value below is refused, and its error
// shows neither the password nor the part of it after the mistake.
func TestUnparsableURLCredentialsAreRedacted(t *testing.T) {
	for _, value := range []string{
		"https://svc:s3cr3t%zz@engine:8080/api", // % not escaped
		"https://svc:s3cr3t#zz@engine:8080/api", // # starts a fragment
		"https://svc:s3cr3t/zz@engine:8080/api", // / ends the authority
		"https://svc:s3cr3t@engine:80a/api",     // a bad port
		"https://svc:s3cr3t@@engine host/api",   // a space in the host
		"svc:s3cr3t@engine:8080",                // no scheme
	} {
		t.Run(value, func(t *testing.T) {
			_, err := load(t, map[string]string{"GAMELAN_EXECUTOR_ENGINE_URL": value})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "GAMELAN_EXECUTOR_ENGINE_URL=", "the error names the variable")
			assert.NotContains(t, err.Error(), "s3cr3t", "the error shows the password")
			assert.NotContains(t, err.Error(), "zz", "the error shows the end of the password")
			assert.Contains(t, err.Error(), "[redacted]", "the error says what it hid")
		})
	}
	// A value with no credentials is still shown whole.
	_, err := load(t, map[string]string{"GAMELAN_EXECUTOR_ENGINE_URL": "https://engine:80a/api"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"https://engine:80a/api"`)
}
