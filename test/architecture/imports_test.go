// Package architecture holds the test that keeps dependencies pointing
// inwards, as docs/architecture.md lays them out.
package architecture

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/gamelan-go/executor"

// rule says which packages of this module a package may import (its
// non-test files). Prefixes match a package and everything below it.
type rule struct {
	pkg     string   // package path relative to the module, prefix match
	allowed []string // module-relative import prefixes allowed
}

// rules are checked in order; the first whose pkg matches applies.
var rules = []rule{
	{"internal/domain", nil},
	{"internal/gen", nil},
	{"internal/ports", []string{"internal/domain"}},
	{"internal/app", []string{"internal/domain", "internal/ports"}},
	// The engine side of each wire protocol, shared by the reference engine
	// and the adapters' test harnesses: it speaks the protocol (generated
	// code, the Kafka message shapes), never the executor's ports, runtime
	// or other adapters. The REST side reads the protocol on its own.
	{"internal/engine/grpcengine", []string{"internal/domain", "internal/gen"}},
	{"internal/engine/restengine", nil},
	{"internal/engine/kafkaengine", []string{"internal/adapters/kafka"}},
	// The adapters' test harnesses are thin layers over that engine side.
	{"internal/adapters/grpc/grpctest", []string{"internal/domain", "internal/gen", "internal/engine/grpcengine"}},
	{"internal/adapters/rest/resttest", []string{"internal/engine/restengine"}},
	{"internal/adapters/kafka/kafkatest", []string{"internal/domain", "internal/adapters/kafka", "internal/engine/kafkaengine"}},
	// Adapters see the domain and the ports (and shared technical packages
	// such as security), never the application core, cmd/ or one another.
	{"internal/adapters/", []string{"internal/domain", "internal/ports", "internal/gen", "internal/security", "internal/telemetry"}},
	{"internal/security", []string{"internal/domain"}},
	{"internal/config", []string{"internal/domain"}},
	{"internal/health", nil},
	{"internal/version", nil},
	{"pkg/porttest", []string{"internal/domain", "internal/ports"}},
	// The test harness runs handlers through the runtime's own invoke path.
	{"pkg/executor/executortest", []string{"internal/domain", "internal/app", "pkg/executor"}},
	{"pkg/executor", []string{"internal/domain"}},
	// Executor types are written the way a fork writes its own: against the
	// public API only (and the list of hosted types imports them).
	{"executors", []string{"pkg/executor", "executors"}},
	// The reference engine is an application of its own: it speaks the
	// protocol through the engine side (internal/engine, plus generated code,
	// Kafka message shapes and tokens) and never touches the executor's
	// runtime, nor the test harnesses.
	{"internal/devengine", []string{"internal/domain", "internal/gen", "internal/security", "internal/telemetry", "internal/version", "internal/engine", "internal/adapters/kafka"}},
	// Any other internal package is a technical helper: it may use the
	// domain, the ports and the generated code, never the core or adapters.
	{"internal/", []string{"internal/domain", "internal/ports", "internal/gen", "internal/security"}},
}

func TestDependenciesPointInwards(t *testing.T) {
	root := moduleRoot(t)
	imports := packageImports(t, root)
	require := func(cond bool, format string, args ...any) {
		t.Helper()
		if !cond {
			t.Errorf(format, args...)
		}
	}
	checked := 0
	for pkg, deps := range imports {
		for _, dep := range deps {
			if dep == "github.com/google/wire" || strings.HasPrefix(dep, "github.com/google/wire/") {
				require(strings.HasPrefix(pkg, "cmd/"), "%s imports Wire; keep Wire in cmd/", pkg)
			}
			rel, ours := strings.CutPrefix(dep, module+"/")
			if !ours {
				continue
			}
			checked++
			if strings.HasPrefix(rel, "cmd/") {
				require(strings.HasPrefix(pkg, "cmd/") || strings.HasPrefix(pkg, "test/"), "%s imports %s: only cmd/ and test/ may import cmd/", pkg, rel)
			}
			r, ok := ruleFor(pkg)
			if !ok {
				continue
			}
			if r.pkg == "internal/adapters/" && strings.HasPrefix(rel+"/", adapterRoot(pkg)+"/") {
				continue // an adapter's own subpackages
			}
			require(allowed(rel, r.allowed), "%s imports %s, against the direction in docs/architecture.md (allowed: %v)", pkg, rel, r.allowed)
		}
	}
	if checked == 0 {
		t.Fatal("found no imports of this module at all: the walk is broken")
	}
	for _, must := range []string{"internal/domain", "internal/ports", "internal/app"} {
		if _, ok := imports[must]; !ok {
			t.Errorf("package %s not found: the walk is broken", must)
		}
	}
}

// TestRuleTableCatchesViolations proves the checker is not vacuous.
func TestRuleTableCatchesViolations(t *testing.T) {
	cases := []struct {
		pkg, dep string
		ok       bool
	}{
		{"internal/domain", "internal/ports", false},
		{"internal/ports", "internal/domain", true},
		{"internal/app", "internal/adapters/memory", false},
		{"internal/adapters/memory", "internal/app", false},
		{"internal/adapters/grpc", "internal/security", true},
		{"pkg/executor", "internal/app", false},
		{"pkg/executor", "internal/domain", true},
		{"executors/examples", "internal/domain", false},
		{"executors/examples", "pkg/executor", true},
		{"executors", "executors/examples", true},
		{"internal/app", "executors", false},
		{"internal/adapters/grpc", "executors/examples", false},
		{"internal/adapters/grpc", "internal/engine/grpcengine", false},
		{"internal/adapters/grpc/grpctest", "internal/engine/grpcengine", true},
		{"internal/engine/restengine", "internal/adapters/rest", false},
		{"internal/engine/grpcengine", "internal/ports", false},
		{"internal/devengine", "internal/engine/kafkaengine", true},
		{"internal/devengine", "internal/adapters/grpc/grpctest", false},
	}
	for _, c := range cases {
		r, ok := ruleFor(c.pkg)
		if !ok {
			t.Fatalf("no rule for %s", c.pkg)
		}
		if got := allowed(c.dep, r.allowed); got != c.ok {
			t.Errorf("%s -> %s allowed = %v, want %v", c.pkg, c.dep, got, c.ok)
		}
	}
}

func ruleFor(pkg string) (rule, bool) {
	for _, r := range rules {
		if pkg == strings.TrimSuffix(r.pkg, "/") || strings.HasPrefix(pkg, strings.TrimSuffix(r.pkg, "/")+"/") {
			return r, true
		}
	}
	return rule{}, false
}

func allowed(dep string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return dep == p || strings.HasPrefix(dep, p+"/") })
}

// adapterRoot returns "internal/adapters/<name>" for a package below it.
func adapterRoot(pkg string) string {
	parts := strings.SplitN(pkg, "/", 4)
	if len(parts) < 3 {
		return pkg
	}
	return strings.Join(parts[:3], "/")
}

// packageImports maps each package directory (module-relative) to the
// imports of its non-test Go files.
func packageImports(t *testing.T, root string) map[string][]string {
	t.Helper()
	imports := make(map[string][]string)
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		for _, imp := range f.Imports {
			p, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			imports[rel] = append(imports[rel], p)
		}
		if _, ok := imports[rel]; !ok {
			imports[rel] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return imports
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}
