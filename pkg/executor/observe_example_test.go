package executor_test

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/pkg/executor"
)

// greeter logs through executor.Logger: its lines carry the task's identity
// and trace without the handler passing any of it.
type greeter struct{}

func (greeter) Descriptor() executor.Descriptor {
	return executor.Descriptor{Type: "greet", CommunicationType: executor.GRPC}
}

func (greeter) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
	name, _ := task.Context["name"].(string)
	executor.Logger(ctx).Info("greeting", slog.String("name", name))
	if !executor.Span(ctx).SpanContext().IsValid() {
		return executor.Failure("NO_TRACE", "the engine's trace context did not reach the handler"), nil
	}
	return executor.Success(map[string]any{"greeting": "hello " + name}), nil
}

func ExampleLogger() {
	// The service logs JSON lines; here the default logger stands in for
	// it, without the time so that the output is stable.
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))

	task := &executor.Task{
		TaskID: "task-7", RunID: "run-1", NodeID: "hello", Attempt: 1, ExecutorType: "greet",
		Context: map[string]any{"name": "Ada"},
	}
	// The engine's trace context, as a transport puts it on the task.
	task.Trace = &executor.TraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

	// The runtime runs the handler the same way (app.Invoke is what
	// executortest uses).
	res := app.Invoke(context.Background(), greeter{}, task, time.Second)
	slog.Info("done", slog.String("status", string(res.Status)))
	// Output:
	// {"level":"INFO","msg":"greeting","run_id":"run-1","node_id":"hello","task_id":"task-7","attempt":1,"executor_type":"greet","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","name":"Ada"}
	// {"level":"INFO","msg":"done","status":"COMPLETED"}
}
