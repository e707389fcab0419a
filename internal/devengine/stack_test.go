package devengine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeExecutor writes a shell script standing for the executor binary,
// which writes its pid beside itself and then runs body, and returns its
// path and a func that removes the pid file of a previous run.
func fakeExecutor(t *testing.T, body string) (path string, forget func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "executor.sh")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\necho $$ > \"$0.pid\"\n"+body+"\n"), 0o755))
	return path, func() { require.NoError(t, os.RemoveAll(path+".pid")) }
}

// executorPID waits until the fake executor at path has written its pid.
func executorPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		raw, err := os.ReadFile(path + ".pid")
		if err != nil || !strings.HasSuffix(string(raw), "\n") {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
		return err == nil
	}, 10*time.Second, time.Millisecond, "the fake executor never wrote its pid")
	return pid
}

// await waits for ch to be closed, failing the test after 10s.
func await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal(what)
	}
}

// stackOptions are the options of a stack whose executor is the fake one
// at executor.
func stackOptions(t *testing.T, executor string) Options {
	t.Helper()
	return Options{Executor: executor, ExecutorLog: filepath.Join(t.TempDir(), "executor.log"), ExecutorHTTPAddr: "127.0.0.1:8090"}
}

// startStack runs runStack with demo as its workload, and returns what it
// returns once it has.
func startStack(ctx context.Context, o Options, demo func(context.Context) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- runStack(ctx, o, "127.0.0.1:8080", "127.0.0.1:9000", []string{"127.0.0.1:9092"},
			io.Discard, slog.New(slog.DiscardHandler), demo)
	}()
	return done
}

// TestRunStackWaitsForItsDemo: runStack owns the demo goroutine: whether
// the executor exits on its own or ctx ends, it stops the demo and
// returns only once the demo has returned. The demo here takes its time
// to stop (until the executor is gone and the test releases it), so a
// runStack that did not wait for it would return first; rounds repeat
// the scenario to make such a return show.
func TestRunStackWaitsForItsDemo(t *testing.T) {
	for _, c := range []struct {
		name, executor string
		cancel         bool // ctx ends; else the executor exits on its own
		wantErr        string
	}{
		{"the executor exits", "exit 3", false, "executor exited: exit status 3"},
		{"ctx ends", "exec sleep 600", true, "executor stopped with signal: terminated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			executor, forget := fakeExecutor(t, c.executor)
			for round := range 5 {
				forget()
				ctx, cancel := context.WithCancel(context.Background())
				started, stopping, release, returned := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
				demo := func(ctx context.Context) error {
					defer close(returned)
					close(started)
					<-ctx.Done()
					close(stopping)
					<-release
					return ctx.Err()
				}
				stackDone := startStack(ctx, stackOptions(t, executor), demo)
				await(t, started, "the demo never started")
				pid := executorPID(t, executor)
				if c.cancel {
					cancel()
				}
				select {
				case err := <-stackDone:
					t.Fatalf("round %d: runStack returned (%v) before its demo had stopped", round, err)
				case <-stopping:
				}
				require.Eventually(t, func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }, 10*time.Second, time.Millisecond,
					"round %d: the executor never ended", round)
				select {
				case err := <-stackDone:
					t.Fatalf("round %d: runStack returned (%v) while its demo was still running", round, err)
				default:
				}
				close(release)
				select {
				case err := <-stackDone:
					assert.ErrorContains(t, err, c.wantErr, "round %d", round)
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: runStack did not return once its demo had", round)
				}
				select {
				case <-returned:
				default:
					t.Fatalf("round %d: runStack returned before its demo", round)
				}
				cancel()
			}
		})
	}
}

// TestStackGivesItsExecutorTheTokenSettings: with tokens on, the executor
// the stack starts gets the secret, and the issuer and audience its
// tokens must carry for the engine to accept them.
func TestStackGivesItsExecutorTheTokenSettings(t *testing.T) {
	executor, _ := fakeExecutor(t,
		`printf '%s\n' "$GAMELAN_EXECUTOR_JWT_SECRET" "$GAMELAN_EXECUTOR_JWT_ISSUER" "$GAMELAN_EXECUTOR_JWT_AUDIENCE"`)
	o := stackOptions(t, executor)
	o.JWTSecret, o.ExecutorIssuer, o.ExecutorAudience = "the-shared-secret", "executors-eu", "engine-eu"
	var err error
	select {
	case err = <-startStack(t.Context(), o, func(ctx context.Context) error { <-ctx.Done(); return nil }):
	case <-time.After(10 * time.Second):
		t.Fatal("runStack did not return within 10s of its executor's exit")
	}
	require.ErrorContains(t, err, "executor exited: <nil>")
	log, err := os.ReadFile(o.ExecutorLog)
	require.NoError(t, err)
	assert.Equal(t, "the-shared-secret\nexecutors-eu\nengine-eu\n", string(log))
}
