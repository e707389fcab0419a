// Package executor is the API a fork of this template writes its handlers
// against. A handler is a type with two methods:
//
//	type TaxExecutor struct{}
//
//	func (TaxExecutor) Descriptor() executor.Descriptor {
//		return executor.Descriptor{Type: "calculate-tax", CommunicationType: executor.GRPC}
//	}
//
//	func (TaxExecutor) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
//		amount, err := executor.Number(task.Context, "amount")
//		if err != nil {
//			return executor.Failure(executor.CodeInvalidInput, err.Error()), nil
//		}
//		return executor.Success(map[string]any{"tax": amount * 0.1}), nil
//	}
//
// The runtime does everything else: registration, heartbeats, routing, the
// worker pool, timeouts (ctx carries the deadline), cancellation, panic
// recovery, deduplication and acknowledged result delivery.
//
// Optional hooks are found by type assertion: Initializer and Cleaner run at
// start-up and shutdown; BeforeExecuteHook, AfterExecuteHook and ErrorHook
// wrap every task. Handlers return business failures as results (Failure)
// and reserve errors for what they could not decide; Retry retries a flaky
// call inside a handler with exponential backoff.
//
// Logger(ctx) returns the service's logger with the task's run_id, node_id,
// task_id, attempt and executor_type, and trace_id and span_id when the
// task is traced; Span(ctx) returns the task's span, under which a handler's
// own spans join the engine's trace.
//
// The types are aliases of the runtime's own (internal/domain), so a handler
// written here needs no conversion. Package executortest runs a handler
// without any transport, for unit tests.
package executor
