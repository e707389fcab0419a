package executortest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/pkg/executor/executortest"
)

// calls records hook and handler calls; handlers run on their own goroutines.
type calls struct {
	mu   sync.Mutex
	list []string
}

func (c *calls) add(s string) { c.mu.Lock(); c.list = append(c.list, s); c.mu.Unlock() }
func (c *calls) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.list...)
}

type lifecycle struct {
	calls      *calls
	initErr    error
	cleanupErr error
}

func (l lifecycle) Descriptor() executor.Descriptor { return executor.Descriptor{Type: "lifecycle"} }
func (l lifecycle) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
	l.calls.add("execute:" + task.ExecutorType)
	if task.Context["block"] == true {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return executor.Success(map[string]any{"echo": task.Context["in"]}), nil
}
func (l lifecycle) Initialize(context.Context) error {
	l.calls.add("initialize")
	return l.initErr
}
func (l lifecycle) Cleanup(context.Context) error {
	l.calls.add("cleanup")
	return l.cleanupErr
}

func TestHarnessRunsLifecycleAndTasks(t *testing.T) {
	recorded := &calls{}
	t.Run("inner", func(t *testing.T) {
		h := executortest.New(t, lifecycle{calls: recorded})
		out := executortest.RequireCompleted(t, h.Run(map[string]any{"in": "x"}))
		assert.Equal(t, "x", out["echo"])

		task := executortest.NewTask("lifecycle", map[string]any{"block": true})
		task.Timeout = 10 * time.Millisecond
		executortest.RequireFailed(t, h.Execute(context.Background(), task), executor.CodeTimeout)
	})
	assert.Equal(t, []string{"initialize", "execute:lifecycle", "execute:lifecycle", "cleanup"}, recorded.all())
}

func TestHarnessFailsTheTestOnBrokenHooks(t *testing.T) {
	for name, ex := range map[string]lifecycle{
		"initialize": {calls: &calls{}, initErr: errors.New("no database")},
		"cleanup":    {calls: &calls{}, cleanupErr: errors.New("leak")},
	} {
		fake := &recordingTB{TB: t}
		func() {
			defer func() { _ = recover() }() // Fatalf stops the fake test
			executortest.New(fake, ex)
			fake.runCleanups()
		}()
		assert.True(t, fake.failed, "%s failure did not fail the test", name)
	}
}

func TestRequireHelpersFailOnMismatch(t *testing.T) {
	fake := &recordingTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		executortest.RequireCompleted(fake, *executor.Failure("X", "no"))
	}()
	assert.True(t, fake.failed)

	fake = &recordingTB{TB: t}
	func() {
		defer func() { _ = recover() }()
		executortest.RequireFailed(fake, *executor.Failure("X", "no"), "Y")
	}()
	assert.True(t, fake.failed)
}

// recordingTB records failures instead of failing the real test.
type recordingTB struct {
	testing.TB
	failed   bool
	cleanups []func()
}

func (r *recordingTB) Helper()               {}
func (r *recordingTB) Errorf(string, ...any) { r.failed = true }
func (r *recordingTB) Fatalf(string, ...any) { r.failed = true; panic("fatal") }
func (r *recordingTB) Cleanup(f func())      { r.cleanups = append(r.cleanups, f) }
func (r *recordingTB) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
