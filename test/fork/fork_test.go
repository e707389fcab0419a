// Package fork forks this template the way a new user does, on a temporary
// copy of the repository, with the scaffolder (cmd/scaffold), and checks
// that what the README promises holds there.
//
// By default it adds a generated executor type and runs the tests that
// could depend on which types are hosted: they must stay green. With
// GAMELAN_FORK_LONG=1 (make test-fork, run by CI) it goes the whole way, as
// docs/forking.md tells: rename the module, add a type, make test, then the
// one-command stack, and a task submitted to the new type through the
// engine's API is answered.
package fork

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// copyRepo copies the repository's files into a temporary directory and
// returns it: in a git checkout, the tracked files and the untracked ones
// not ignored; elsewhere (a copy made by this test) every file but bin/.
func copyRepo(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	dir := t.TempDir()
	for _, rel := range repoFiles(t, root) {
		src := filepath.Join(root, rel)
		info, err := os.Stat(src)
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		require.NoError(t, err)
		data, err := os.ReadFile(src)
		require.NoError(t, err)
		dst := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, data, info.Mode().Perm()))
	}
	return dir
}

// repoFiles lists the files of the repository at root, relative to it.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	list := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	list.Dir = root
	if files, err := list.Output(); err == nil {
		return strings.Split(strings.TrimRight(string(files), "\x00"), "\x00")
	}
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == "bin" || rel == ".git") {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			files = append(files, rel)
		}
		return nil
	})
	require.NoError(t, err, "list the repository's files")
	return files
}

// in runs a command in dir, failing the test with its output if it fails,
// and returns its output.
func in(t *testing.T, dir string, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	// The copy's own tests must not go the whole way again.
	cmd.Env = append(os.Environ(), "GAMELAN_FORK_LONG=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

// TestAddingAnExecutorTypeKeepsTheTestsGreen adds a type with the
// scaffolder (ledger-export, a name no other test uses, since this test
// also runs in the copy TestForkWholeWay makes) and runs, in the copy, every test that could depend on which
// types the service hosts (the service's own, the architecture's, the
// component tests that start the service) and the new type's own.
func TestAddingAnExecutorTypeKeepsTheTestsGreen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a copy of the repository")
	}
	dir := copyRepo(t)
	out := in(t, dir, 2*time.Minute, "go", "run", "./cmd/scaffold", "executor", "ledger-export", "-transport", "kafka")
	assert.Contains(t, out, "executors/ledgerexport/ledgerexport.go")
	assert.Contains(t, out, "curl")
	hosted, err := os.ReadFile(filepath.Join(dir, "executors", "hosted.go"))
	require.NoError(t, err)
	assert.Contains(t, string(hosted), "ledgerexport.New(),")
	handler, err := os.ReadFile(filepath.Join(dir, "executors", "ledgerexport", "ledgerexport.go"))
	require.NoError(t, err)
	assert.Contains(t, string(handler), "executor.Kafka")

	in(t, dir, 5*time.Minute, "go", "vet", "./...")
	assert.Empty(t, in(t, dir, time.Minute, "gofmt", "-l", "executors", "cmd"), "the scaffolded code is gofmt-formatted")
	in(t, dir, 10*time.Minute, "go", "test", "-count=1", "./executors/...", "./cmd/...", "./test/architecture/",
		"./test/component/", "-run", "Test(Descriptor|Execute|All|README|Dependencies|Rule|Service|Defaults|GRPCPush)")

	// The scaffolder refuses what would break the tree.
	for _, args := range [][]string{
		{"executor", "ledger-export"},                  // exists already
		{"executor", "Currency_Converter"},             // not a type name
		{"executor", "fx-rates", "-transport", "smtp"}, // no such transport
		{"module", "not a module path"},
	} {
		cmd := exec.Command("go", append([]string{"run", "./cmd/scaffold"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		assert.Error(t, err, "scaffold %v: %s", args, out)
	}
}

// TestForkWholeWay renames the module, adds a type, runs make test, and
// submits a task to the new type through the one-command stack, as the
// README shows with curl.
func TestForkWholeWay(t *testing.T) {
	if os.Getenv("GAMELAN_FORK_LONG") != "1" {
		t.Skip("runs make test on a renamed copy of the repository: set GAMELAN_FORK_LONG=1 (make test-fork) to run it")
	}
	dir := copyRepo(t)
	out := in(t, dir, 5*time.Minute, "go", "run", "./cmd/scaffold", "module", "github.com/acme/payments-executor")
	assert.Contains(t, out, "regenerated internal/gen")
	in(t, dir, 2*time.Minute, "go", "run", "./cmd/scaffold", "executor", "currency-converter")
	goMod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(goMod), "module github.com/acme/payments-executor\n"), "go.mod: %.80s", goMod)

	// make test, as a fork's CI runs it; the interop suite is the same code
	// as here, and skipped only when its Python is missing.
	in(t, dir, 25*time.Minute, "make", "test")
	in(t, dir, 5*time.Minute, "make", "build")

	// The one-command stack, on free ports: a task for the new type,
	// submitted as the README shows, is answered.
	ports := freePorts(t, 6)
	stack := exec.Command(filepath.Join(dir, "bin", "devengine"),
		"-executor", filepath.Join(dir, "bin", "executor"), "-demo", "0", "-executor-log", filepath.Join(dir, "bin", "executor.log"),
		"-http", ports[0], "-grpc", ports[1], "-kafka", ports[2], "-executor-http", ports[3],
		"-executor-grpc-port", port(ports[4]), "-executor-rest-port", port(ports[5]))
	stack.Dir = dir
	var output testkit.SyncBuffer
	stack.Stdout, stack.Stderr = &output, &output
	require.NoError(t, stack.Start())
	t.Cleanup(func() {
		_ = stack.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = stack.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			_ = stack.Process.Kill()
			<-done
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(output.String(), "executor ready") }, 2*time.Minute, 50*time.Millisecond,
		"the stack did not start:\n%s", &output)
	assert.Contains(t, output.String(), "currency-converter", "the stack names the new type among the hosted ones")

	body := `{"executorType":"currency-converter","context":{"input":"hello"}}`
	resp, err := http.Post("http://"+ports[0]+"/api/v1/tasks", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	var submitted struct {
		TaskID  string `json:"taskId"`
		Warning string `json:"warning"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&submitted))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.NotEmpty(t, submitted.TaskID)
	assert.Empty(t, submitted.Warning, "the new type is served")

	var task struct {
		State  string `json:"state"`
		Result struct {
			Output map[string]any `json:"output"`
		} `json:"result"`
	}
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + ports[0] + "/api/v1/tasks/" + submitted.TaskID)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&task) == nil && task.State == "COMPLETED"
	}, time.Minute, 50*time.Millisecond, "the task for the new type was not answered:\n%s", &output)
	assert.Equal(t, "hello", task.Result.Output["output"])
}

// freePorts returns n distinct free addresses on 127.0.0.1.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var listeners []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		listeners = append(listeners, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range listeners {
		require.NoError(t, l.Close())
	}
	return addrs
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
