// Package executortest runs one executor without any transport, for unit
// tests of handlers. It goes through the same code path as the runtime's
// workers (timeouts, panic recovery, error codes, hooks), so what passes here
// behaves the same in the service:
//
//	func TestValidOrder(t *testing.T) {
//		h := executortest.New(t, OrderValidator{})
//		res := h.Run(map[string]any{"orderId": "ORDER-1"})
//		out := executortest.RequireCompleted(t, res)
//		if out["valid"] != true { t.Fatalf("valid = %v", out["valid"]) }
//	}
package executortest

import (
	"context"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/pkg/executor"
)

// DefaultTimeout bounds a task that carries no timeout of its own.
const DefaultTimeout = 30 * time.Second

// Harness runs tasks through one executor.
type Harness struct {
	t              testing.TB
	ex             executor.Executor
	defaultTimeout time.Duration
}

// Option configures a Harness.
type Option func(*Harness)

// WithDefaultTimeout sets the timeout applied to tasks that carry none.
func WithDefaultTimeout(d time.Duration) Option {
	return func(h *Harness) { h.defaultTimeout = d }
}

// New returns a harness for ex. It calls ex's Initialize hook now and its
// Cleanup hook when the test ends, failing the test if either fails.
func New(t testing.TB, ex executor.Executor, opts ...Option) *Harness {
	t.Helper()
	h := &Harness{t: t, ex: ex, defaultTimeout: DefaultTimeout}
	for _, o := range opts {
		o(h)
	}
	if d := ex.Descriptor().WithDefaults(); d.Validate() != nil {
		t.Fatalf("executortest: invalid descriptor: %v", d.Validate())
	}
	if i, ok := ex.(executor.Initializer); ok {
		if err := i.Initialize(context.Background()); err != nil {
			t.Fatalf("executortest: initialize %s: %v", ex.Descriptor().Type, err)
		}
	}
	if c, ok := ex.(executor.Cleaner); ok {
		t.Cleanup(func() {
			if err := c.Cleanup(context.Background()); err != nil {
				t.Errorf("executortest: cleanup %s: %v", ex.Descriptor().Type, err)
			}
		})
	}
	return h
}

// Run executes a task with the given input variables, addressed to the
// executor's own type, and returns its result.
func (h *Harness) Run(vars map[string]any) executor.Result {
	h.t.Helper()
	return h.Execute(context.Background(), NewTask(h.ex.Descriptor().Type, vars))
}

// Execute runs task under ctx. Cancel ctx to simulate the engine cancelling
// the task; set task.Timeout to test deadlines.
func (h *Harness) Execute(ctx context.Context, task *executor.Task) executor.Result {
	h.t.Helper()
	return app.Invoke(ctx, h.ex, task, h.defaultTimeout)
}

// NewTask returns a well-formed task for the executor type with the given
// variables: run id "run-test", node id "node-test", attempt 1.
func NewTask(executorType string, vars map[string]any) *executor.Task {
	if vars == nil {
		vars = map[string]any{}
	}
	return &executor.Task{
		TaskID:         "task-test",
		RunID:          "run-test",
		NodeID:         "node-test",
		NodeType:       executorType,
		ExecutorType:   executorType,
		Attempt:        1,
		ExecutionToken: "token-test",
		Context:        vars,
		ScheduledAt:    time.Now().UTC(),
	}
}

// RequireCompleted fails the test unless res is COMPLETED, and returns its output.
func RequireCompleted(t testing.TB, res executor.Result) map[string]any {
	t.Helper()
	if res.Status != executor.StatusCompleted {
		t.Fatalf("status = %s, want COMPLETED (error: %+v)", res.Status, res.Error)
	}
	return res.Output
}

// RequireFailed fails the test unless res is FAILED with the given code, and
// returns its error.
func RequireFailed(t testing.TB, res executor.Result, code string) *executor.ErrorInfo {
	t.Helper()
	if res.Status != executor.StatusFailed {
		t.Fatalf("status = %s, want FAILED %s (output: %v)", res.Status, code, res.Output)
	}
	if res.Error == nil || res.Error.Code != code {
		t.Fatalf("error = %+v, want code %s", res.Error, code)
	}
	return res.Error
}
