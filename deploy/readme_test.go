package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADMEDeployCommands keeps the README's "Deploying it" commands the
// ones CI checks: every overlay `kubectl apply -k` names is one this
// package renders and validates, every file it applies or builds from
// exists (and is one a test decodes), the Compose file is the one
// compose_test.go loads, and every make target it names exists.
func TestREADMEDeployCommands(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	section := sectionOf(t, string(readme), "## Deploying it")

	applied := regexp.MustCompile(`kubectl apply -k (\S+)`).FindAllStringSubmatch(section, -1)
	require.NotEmpty(t, applied, "the README shows how to apply the overlays")
	for _, m := range applied {
		dir, found := strings.CutPrefix(m[1], "deploy/kubernetes/overlays/")
		assert.True(t, found && slices.Contains(overlays, dir), "README applies %s, which no test renders", m[1])
	}
	for _, m := range regexp.MustCompile(`(?:overlays/grpc-push/hpa\.yaml|base/secret\.yaml)`).FindAllString(section, -1) {
		assert.FileExists(t, filepath.Join("kubernetes", m), "README names %s", m)
	}
	for _, m := range regexp.MustCompile(`docker compose -f (\S+)`).FindAllStringSubmatch(section, -1) {
		assert.Equal(t, "deploy/compose.yaml", m[1], "README runs a Compose file compose_test.go does not load")
	}
	for _, m := range regexp.MustCompile(`docker build -f (\S+)`).FindAllStringSubmatch(section, -1) {
		assert.FileExists(t, filepath.Join("..", m[1]), "README builds from %s", m[1])
	}

	makefile, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile("`make ([a-z-]+)`|\\bmake ([a-z-]+) ").FindAllStringSubmatch(section, -1) {
		target := m[1] + m[2]
		assert.Regexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(target)+`:`), string(makefile), "README names make %s", target)
	}
}

// sectionOf returns the text of the README section that starts with
// heading, up to the next section of the same level.
func sectionOf(t *testing.T, text, heading string) string {
	t.Helper()
	start := strings.Index(text, "\n"+heading+"\n")
	require.GreaterOrEqual(t, start, 0, "README has no %q section", heading)
	rest := text[start+len(heading)+2:]
	if end := strings.Index(rest, "\n## "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}
