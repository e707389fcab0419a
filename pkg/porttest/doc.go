// Package porttest holds the contract suites of the runtime's ports: one
// suite per port (TaskSource, ResultSink, Registrar, Heartbeater) that every
// adapter of that port runs, the in-memory reference implementation first and
// the gRPC, Kafka and HTTP adapters against real servers and brokers.
//
// An adapter's test calls the suite with a function that builds a fresh
// harness for each scenario: the adapter under test plus the engine-side
// hooks the suite needs to observe it (publish a task, read what the engine
// received, break the connection):
//
//	func TestResultSinkContract(t *testing.T) {
//		porttest.ResultSink(t, func(t *testing.T) porttest.ResultSinkHarness {
//			engine := memory.NewEngine()
//			return porttest.ResultSinkHarness{
//				Sink:     engine.ResultSink(),
//				Received: engine.Results,
//				Break:    func() { engine.FailDeliveries(math.MaxInt) },
//				Restore:  func() { engine.FailDeliveries(0) },
//			}
//		})
//	}
//
// Rules the suites follow, and that harnesses can rely on:
//   - Every scenario is a parallel subtest (t.Parallel) under one subtest
//     named after the port, so the suite function returns only when every
//     scenario has finished. newHarness is therefore called concurrently.
//   - Every scenario builds its own ids from UniqueID (run ids, executor
//     ids), so scenarios, and suites of several adapters, can share one
//     broker or engine. A harness that reads a shared topic may return
//     foreign records from Received or LastHeartbeat: the suites filter by
//     their own ids.
//   - The TaskSource suite stops and closes every source it starts, and
//     closes the harness's Source even in a scenario that never starts it
//     (Close is idempotent and safe without Start).
//   - Features a transport cannot carry are declared in the harness
//     (Unsupported fields, a nil Cancel, Break or Forget, Redelivers false)
//     and the scenarios depending on them are skipped or narrowed, never
//     faked.
//   - Waits are conditions with a deadline (WaitTimeout, default
//     DefaultWaitTimeout). Where a scenario must show that something does
//     NOT happen, it bounds the observation by a later event (a sentinel task
//     published after, a successor source receiving the tasks) whenever the
//     port allows one, and only otherwise by QuietPeriod.
//
// The suites are tested themselves (selftest_test.go): run against the
// in-memory reference wrapped to break one promise at a time (a double
// Settle, an Offer after Stop, reading after Stop, commits that never happen
// or outlive Close, a lost result, a nil returned before the engine
// acknowledged, a Deliver deaf to its context), each must fail.
//
// Intake is the test double of the runtime side of a TaskSource. It is
// exported so that adapters can also write their own transport-specific
// tests against it.
//
// The package imports only the standard library, testify and the module's
// domain and ports packages: adapters' tests import it, so it must not
// depend on the runtime or on any adapter.
package porttest
