package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// pythonEngine is engine.py running as a process: a gRPC C-core engine
// with default server options, driven over its JSON control API.
type pythonEngine struct {
	grpcAddr string
	control  string // base URL of the control API
}

// python returns the interpreter with grpcio: GAMELAN_INTEROP_PYTHON, else
// Debian's /usr/bin/python3 (python3-grpcio), else python3 on the PATH.
func python(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("GAMELAN_INTEROP_PYTHON"), "/usr/bin/python3", "python3"}
	for _, py := range candidates {
		if py == "" {
			continue
		}
		if exec.Command(py, "-c", "import grpc, google.protobuf").Run() == nil {
			return py
		}
	}
	if os.Getenv("GAMELAN_SKIP_INTEROP") == "1" {
		t.Skip("no Python with grpcio; GAMELAN_SKIP_INTEROP=1 skips the interop suite")
	}
	t.Fatal("the interop suite needs Python 3 with grpcio and protobuf: Debian's python3-grpcio " +
		"(.ci/run installs it: apt-get install -y python3-grpcio), or GAMELAN_INTEROP_PYTHON naming such an " +
		"interpreter; GAMELAN_SKIP_INTEROP=1 skips the suite on a machine without it")
	return ""
}

// descriptorSet writes the protocol's descriptors, and those they import,
// as a FileDescriptorSet for engine.py: the Python side builds its message
// classes from what the Go code was generated from, so both speak exactly
// the same protocol.
func descriptorSet(t *testing.T) string {
	t.Helper()
	var set descriptorpb.FileDescriptorSet
	for _, file := range []protoreflect.FileDescriptor{
		emptypb.File_google_protobuf_empty_proto, structpb.File_google_protobuf_struct_proto,
		timestamppb.File_google_protobuf_timestamp_proto,
		gamelanv1.File_gamelan_grpc_v1_executor_service_proto, dispatcherpb.File_gamelan_dispatcher_executor_proto,
	} {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(file))
	}
	raw, err := proto.Marshal(&set)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "gamelan.pb")
	require.NoError(t, os.WriteFile(path, raw, 0o600))
	return path
}

// startPythonEngine starts engine.py and stops it when the test ends.
func startPythonEngine(t *testing.T) *pythonEngine {
	t.Helper()
	cmd := exec.Command(python(t), "engine.py", "--descriptors", descriptorSet(t))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &testkit.SyncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close() // engine.py stops when its stdin closes
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() && stderr.String() != "" {
			t.Logf("engine.py stderr:\n%s", stderr)
		}
	})
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		first <- line
	}()
	var ports struct {
		GRPCPort    int    `json:"grpc_port"`
		ControlPort int    `json:"control_port"`
		GRPCIO      string `json:"grpcio"`
	}
	select {
	case line := <-first:
		require.NoError(t, json.Unmarshal([]byte(line), &ports), "engine.py's first line %q; stderr:\n%s", line, stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("engine.py did not start; stderr:\n%s", stderr)
	}
	t.Logf("engine.py on grpcio %s, gRPC at 127.0.0.1:%d", ports.GRPCIO, ports.GRPCPort)
	return &pythonEngine{
		grpcAddr: "127.0.0.1:" + strconv.Itoa(ports.GRPCPort),
		control:  "http://127.0.0.1:" + strconv.Itoa(ports.ControlPort),
	}
}

// engineState is what engine.py knows (GET /state).
type engineState struct {
	Registrations map[string]struct {
		Type       string `json:"type"`
		Endpoint   string `json:"endpoint"`
		Count      int    `json:"count"`
		Generation int    `json:"generation"`
	} `json:"registrations"`
	Heartbeats  map[string]int `json:"heartbeats"`
	Results     []engineResult `json:"results"`
	Acks        map[string]int `json:"acks"`
	Streams     map[string]int `json:"streams"`
	StreamOpens map[string]int `json:"stream_opens"`
	Generation  int            `json:"generation"`
}

// engineResult is a TaskResult as engine.py recorded it.
type engineResult struct {
	TaskID      string `json:"task_id"`
	RunID       string `json:"run_id"`
	NodeID      string `json:"node_id"`
	Attempt     int    `json:"attempt"`
	Status      string `json:"status"`
	OutputBytes int    `json:"output_bytes"`
	Error       struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (e *pythonEngine) call(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var reader *bytes.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		require.NoError(t, err)
		reader = bytes.NewReader(raw)
	} else {
		reader = bytes.NewReader(nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.control+path, reader)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "%s %s", method, path)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s %s", method, path)
	if out != nil {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
}

func (e *pythonEngine) state(t *testing.T) engineState {
	t.Helper()
	var s engineState
	e.call(t, http.MethodGet, "/state", nil, &s)
	return s
}

// task is a task for engine.py to queue.
type task struct {
	TaskID         string         `json:"task_id"`
	RunID          string         `json:"run_id"`
	NodeID         string         `json:"node_id"`
	Attempt        int            `json:"attempt"`
	NodeType       string         `json:"node_type,omitempty"`
	ExecutionToken string         `json:"execution_token,omitempty"`
	Context        map[string]any `json:"context"`
}

func (e *pythonEngine) enqueue(t *testing.T, executorID string, tasks ...task) {
	t.Helper()
	e.call(t, http.MethodPost, "/enqueue", map[string]any{"executor_id": executorID, "tasks": tasks}, nil)
}

// ack is the executor's answer to a push.
type ack struct {
	Accepted bool   `json:"accepted"`
	Code     int    `json:"code"`
	Message  string `json:"message"`
}

// push pushes a task to an executor's Execute endpoint through engine.py's
// own gRPC client, signed for executorID as Gamelan signs.
func (e *pythonEngine) push(t *testing.T, endpoint, executorID string, tk task, variables map[string]string) ack {
	t.Helper()
	var a ack
	e.call(t, http.MethodPost, "/push", map[string]any{"endpoint": endpoint, "request": map[string]any{
		"run_id": tk.RunID, "node_id": tk.NodeID, "attempt": tk.Attempt, "token": tk.ExecutionToken,
		"variables": variables, "idempotency_key": fmt.Sprintf("%s:%s:%d", tk.RunID, tk.NodeID, tk.Attempt),
		"signature": grpctest.Signature(tk.RunID, executorID),
	}}, &a)
	return a
}

// restart stops engine.py's gRPC server (letting calls finish for grace
// seconds), keeps it down for down seconds, and starts a new one on the
// same port that knows no executor.
func (e *pythonEngine) restart(t *testing.T, grace, down float64) {
	t.Helper()
	e.call(t, http.MethodPost, "/restart", map[string]any{"grace": grace, "down_seconds": down}, nil)
}

// waitFor polls engine.py's state until cond holds, or fails after d.
func (e *pythonEngine) waitFor(t *testing.T, d time.Duration, what string, cond func(engineState) bool) engineState {
	t.Helper()
	deadline := time.After(d)
	tick := time.NewTicker(20 * time.Millisecond) // another process's state offers no notification
	defer tick.Stop()
	for {
		s := e.state(t)
		if cond(s) {
			return s
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("waited %s for %s; engine state: %+v", d, what, s)
		}
	}
}
