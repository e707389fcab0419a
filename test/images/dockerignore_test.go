package images

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ignoreRule is one line of a .dockerignore file.
type ignoreRule struct {
	pattern   *regexp.Regexp
	exception bool // a "!" line: re-includes what it matches
}

// ignoreFile is a parsed .dockerignore, with Docker's rules: one pattern a
// line, "#" lines are comments, a pattern is cleaned like a path and
// anchored at the context's root ("/x" and "x" are the same), "*" and "?"
// stop at "/", "**" matches any number of directories, a path is left out
// when it or one of its parent directories matches, and the last matching
// line decides, so that a "!" line re-includes what an earlier one left out.
type ignoreFile []ignoreRule

func parseIgnore(text string) (ignoreFile, error) {
	var rules ignoreFile
	scanner := bufio.NewScanner(strings.NewReader(text))
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rule := ignoreRule{}
		if rest, ok := strings.CutPrefix(line, "!"); ok {
			rule.exception, line = true, strings.TrimSpace(rest)
		}
		line = strings.TrimPrefix(path.Clean(line), "/")
		re, err := regexp.Compile("^" + globToRegexp(line) + "$")
		if err != nil {
			return nil, err
		}
		rule.pattern = re
		rules = append(rules, rule)
	}
	return rules, scanner.Err()
}

// globToRegexp translates one pattern; "**/" may match no directory at all.
func globToRegexp(glob string) string {
	var b strings.Builder
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; {
		case strings.HasPrefix(glob[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(glob[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '\\' && i+1 < len(glob):
			i++
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
}

// excluded reports whether the file at rel (slash-separated, relative to
// the context's root) is left out of the build context.
func (f ignoreFile) excluded(rel string) bool {
	out := false
	for _, rule := range f {
		if rule.matchesOrParent(rel) {
			out = !rule.exception
		}
	}
	return out
}

// hasExceptions reports whether any line re-includes ("!") what others leave out.
func (f ignoreFile) hasExceptions() bool {
	return slices.ContainsFunc(f, func(r ignoreRule) bool { return r.exception })
}

func (r ignoreRule) matchesOrParent(rel string) bool {
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		if r.pattern.MatchString(p) {
			return true
		}
	}
	return false
}

// contextIgnore reads the ignore file Docker uses for a Dockerfile: one
// named after it (<Dockerfile>.dockerignore) when it exists, else the
// context's .dockerignore.
func contextIgnore(t *testing.T, dockerfile string) ignoreFile {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(root, dockerfile+".dockerignore"))
	if os.IsNotExist(err) {
		text, err = os.ReadFile(filepath.Join(root, ".dockerignore"))
	}
	require.NoError(t, err)
	rules, err := parseIgnore(string(text))
	require.NoError(t, err)
	return rules
}

func TestIgnoreRulesFollowDocker(t *testing.T) {
	rules, err := parseIgnore("# comment\n*/temp*\n/bin/\n**/*.md\n!docs/keep.md\nsecret?.txt\n")
	require.NoError(t, err)
	for rel, want := range map[string]bool{
		"somedir/temporary.txt": true,  // */temp* one level down
		"temporary.txt":         false, // ... but not at the root
		"a/b/temp.txt":          false, // ... nor two levels down
		"bin/executor":          true,  // a parent directory matches
		"binary/x":              false,
		"README.md":             true, // **/ matches no directory too
		"docs/deep/x.md":        true,
		"docs/keep.md":          false, // the last matching line wins
		"secret1.txt":           true,
		"secret12.txt":          false,
		"cmd/main.go":           false,
	} {
		assert.Equal(t, want, rules.excluded(rel), rel)
	}
}

// buildInputs lists the files, relative to the module root, that building
// the command reads: go.mod, go.sum and the source files of every package
// of this module it imports.
func buildInputs(t *testing.T, command string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,Module,GoFiles,SFiles,EmbedFiles,SysoFiles,CgoFiles", command)
	cmd.Dir = root
	out, err := cmd.Output()
	require.NoError(t, err, "go list %s", command)
	absRoot, err := filepath.Abs(root)
	require.NoError(t, err)
	inputs := []string{"go.mod", "go.sum"}
	decoder := json.NewDecoder(strings.NewReader(string(out)))
	for decoder.More() {
		var pkg struct {
			Dir                                              string
			Module                                           *struct{ Main bool }
			GoFiles, SFiles, EmbedFiles, SysoFiles, CgoFiles []string
		}
		require.NoError(t, decoder.Decode(&pkg))
		if pkg.Module == nil || !pkg.Module.Main {
			continue // the standard library and dependencies come from the module cache
		}
		dir, err := filepath.Rel(absRoot, pkg.Dir)
		require.NoError(t, err)
		for _, files := range [][]string{pkg.GoFiles, pkg.SFiles, pkg.EmbedFiles, pkg.SysoFiles, pkg.CgoFiles} {
			for _, f := range files {
				inputs = append(inputs, filepath.ToSlash(filepath.Join(dir, f)))
			}
		}
	}
	return inputs
}

// TestDockerignoreKeepsWhatTheBuildsRead: every file a Dockerfile copies
// by name, the build script, and every source file the command's build
// reads stays in the context; and the ignore file does leave out what it
// is there for.
func TestDockerignoreKeepsWhatTheBuildsRead(t *testing.T) {
	for _, img := range images(t) {
		t.Run(img.dockerfile, func(t *testing.T) {
			rules := contextIgnore(t, img.dockerfile)
			var copied []string
			for _, s := range readDockerfile(t, img.dockerfile) {
				for _, args := range s.all("COPY") {
					if strings.Contains(args, "--from=") {
						continue // from a stage, not from the context
					}
					fields := strings.Fields(withoutFlags(args))
					copied = append(copied, fields[:len(fields)-1]...) // the last is the destination
				}
			}
			require.Contains(t, copied, ".", "the Dockerfile copies the context")
			needed := append(buildInputs(t, img.command), "scripts/build-static.sh")
			for _, src := range append(copied, needed...) {
				if src == "." {
					continue // the whole context: what it must hold is checked file by file
				}
				assert.False(t, rules.excluded(src), "%s is needed by the build of %s but .dockerignore leaves it out", src, img.command)
			}
			assert.Greater(t, len(needed), 20, "go list found the command's sources")

			for _, left := range []string{".git/HEAD", "bin/executor", "README.md", "docs/architecture.md", "test/component/service_test.go",
				"internal/config/config_test.go", "deploy/compose.yaml", ".ci/run"} {
				assert.True(t, rules.excluded(left), "%s stays out of the context", left)
			}
		})
	}
}
