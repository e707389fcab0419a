package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

const (
	// The executor ids: the service's is NAME-type-INSTANCE_ID.
	serviceExecutorID = "executor-calculate-tax-bench"
	rawExecutorID     = "raw-calculate-tax-bench"

	// expectedTax is calculate-tax's answer to an amount of 125.5.
	expectedTax = 12.55
)

// grpcBench is one transport's test bed: the lean engine, the executor
// service and its raw baseline, each ready to take tasks.
type grpcBench struct {
	engine        *leanEngine
	service, raw  *grpcSide
	serviceHandle *service
}

// startGRPCBench starts the engine, then the service and the raw baseline
// as child processes, and waits until both can take tasks. Both stay up
// for the whole scenario, idle while the other is measured.
func startGRPCBench(ctx context.Context, o *options, transport string) (_ *grpcBench, err error) {
	engine, err := startLeanEngine()
	if err != nil {
		return nil, err
	}
	b := &grpcBench{engine: engine}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.close())
		}
	}()
	b.serviceHandle, err = startService(ctx, o.executor, map[string]string{
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET": engine.addr(),
		"GAMELAN_EXECUTOR_GRPC_INTAKE":        transport,
		"GAMELAN_EXECUTOR_GRPC_HOST":          "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":          "0", // the push endpoint comes with the registration
		"GAMELAN_EXECUTOR_INSTANCE_ID":        "bench",
		// Room for the 256-in-flight run, and for a backlog at 10,000/s to
		// show as latency rather than as refusals.
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE": "256",
		"GAMELAN_EXECUTOR_QUEUE_SIZE":       "10000",
	})
	if err != nil {
		return nil, err
	}
	if b.service, err = newGRPCSide(ctx, engine, transport, serviceExecutorID, b.serviceHandle.proc); err != nil {
		return nil, err
	}
	b.service.svc = b.serviceHandle
	// "--" ends the harness's flags: the rest are the role's.
	rawProc, _, err := startRole(ctx, "raw-"+transport, "-engine", engine.addr(), "-id", rawExecutorID)
	if err != nil {
		return nil, err
	}
	b.raw = &grpcSide{proc: rawProc} // so that close stops it if the next step fails
	raw, err := newGRPCSide(ctx, engine, transport, rawExecutorID, rawProc)
	if err != nil {
		return nil, err
	}
	b.raw = raw
	return b, nil
}

// rounds runs measure on the service and on the baseline in turns, rounds
// times each, in the order S R R S S R R S... (R S S R... when k is odd):
// neither side always runs first on a machine the other warmed up, and a
// burst of load from elsewhere on the machine tends to hit both.
func (b *grpcBench) rounds(k, rounds int, measure func(*grpcSide) (*grpcRun, error)) (svc, raw grpcSeries, err error) {
	for j := range rounds {
		order := []*grpcSide{b.service, b.raw}
		if (j+k)%2 == 1 {
			order = []*grpcSide{b.raw, b.service}
		}
		for _, side := range order {
			run, err := measure(side)
			if err != nil {
				return nil, nil, err
			}
			if side == b.service {
				svc = append(svc, run)
			} else {
				raw = append(raw, run)
			}
		}
	}
	return svc, raw, nil
}

// close stops the service (SIGTERM: it drains and unregisters), the raw
// baseline and the engine, in that order, so that each child's last words
// reach the engine.
func (b *grpcBench) close() error {
	var errs []error
	for _, s := range []*grpcSide{b.service, b.raw} {
		if s != nil && s.pushConn != nil {
			s.pushConn.Close()
		}
	}
	if b.serviceHandle != nil {
		errs = append(errs, b.serviceHandle.stop(30*time.Second))
	}
	if b.raw != nil && b.raw.proc != nil {
		errs = append(errs, b.raw.proc.stop(10*time.Second))
	}
	b.engine.stop()
	return errors.Join(errs...)
}

// grpcSide is one system under test, the service or its raw baseline, as
// the engine sees it.
type grpcSide struct {
	transport  string // push, stream or bidi
	executorID string
	engine     *leanEngine
	proc       *proc
	svc        *service // the service's HTTP side; nil for the baseline
	pushConn   *grpc.ClientConn
	push       dispatcherpb.ExecutorClient // push only
}

// newGRPCSide waits until the executor can take tasks over transport and,
// for push, connects to its registered endpoint: one connection, shared by
// every push, as an engine keeps.
func newGRPCSide(ctx context.Context, engine *leanEngine, transport, executorID string, p *proc) (*grpcSide, error) {
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	endpoint, err := engine.waitIntake(wait, executorID, transport)
	if err != nil {
		return nil, err
	}
	s := &grpcSide{transport: transport, executorID: executorID, engine: engine, proc: p}
	if transport == "push" {
		if s.pushConn, err = grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, err
		}
		s.push = dispatcherpb.NewExecutorClient(s.pushConn)
	}
	return s, nil
}

// The limits of one run.
const (
	// quietLimit: answers that stop coming for this long mean lost tasks.
	quietLimit = 5 * time.Second
	// A push refused (an ack not accepted: 503, "try later") is sent again
	// as an engine would, after pushRetry's pause, pushAttempts times in
	// all (about 1 s of pauses); every refusal is counted and reported,
	// and a task refused every time is lost.
	pushAttempts = 8
	pushTimeout  = 10 * time.Second
)

// pushRetry paces the pushes sent again after a refusal.
var pushRetry = domain.Backoff{Initial: 10 * time.Millisecond, Max: 320 * time.Millisecond, Multiplier: 2}

// runSeq numbers the runs: each has a run id of its own, so that the
// executor's deduplication never meets an earlier run's task and a late
// result is never taken for the current run's.
var runSeq atomic.Int64

// grpcRun is one measured run of n tasks through one side.
type grpcRun struct {
	id        string
	side      *grpcSide
	n         int
	rate      float64 // tasks/s sent, open loop; 0 closed loop
	rec       *recorder
	signature string         // the push signature: the run id, then the executor id
	pushes    sync.WaitGroup // push calls in progress
	// Counted as they happen.
	duplicates, failed, refused, sendErrors atomic.Int64
	refusal                                 atomic.Pointer[string] // the message of the first refusal
	// Set when the run ends.
	unanswered int           // tasks without an answer at the deadline
	cutAt      time.Duration // from the start to the deadline, when cut
	cpu        time.Duration // the side's CPU time over the run, when measured
	mallocs    float64       // the side's heap allocations over the run, when measured
}

// measure runs n tasks through the side: open loop at rate tasks/s, or
// with rate 0 closed loop keeping inFlight tasks outstanding. It returns
// once every task is answered; or at the deadline if answers still come
// (the side cannot keep the rate: the run's unanswered tasks get the
// latency they reached then, a lower bound, and its note says so); or with
// an error when answers stopped coming (lost tasks) or a result was wrong.
func (s *grpcSide) measure(ctx context.Context, n int, rate float64, inFlight int) (*grpcRun, error) {
	run := &grpcRun{id: "r" + strconv.FormatInt(runSeq.Add(1), 10), side: s, n: n, rate: rate, rec: newRecorder(n, rate)}
	run.signature = grpcengine.Signature(run.id, s.executorID)
	s.engine.run.Store(run)
	defer s.engine.run.Store(nil)

	loopCtx, stopLoop := context.WithCancel(ctx)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		send := func(i int) { run.send(ctx, i) }
		if rate > 0 {
			openLoop(loopCtx, run.rec, n, false, send)
		} else {
			closedLoop(loopCtx, run.rec, n, inFlight, send)
		}
	}()
	deadline := time.Now().Add(time.Minute)
	if rate > 0 {
		schedule := time.Duration(float64(n) / rate * float64(time.Second))
		deadline = time.Now().Add(schedule + max(10*time.Second, schedule))
	}
	complete, err := run.await(ctx, deadline)
	stopLoop()
	<-sent
	run.pushes.Wait()
	s.engine.discard(s.executorID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.executorID, err)
	}
	if !complete {
		run.cut(time.Now())
	}
	return run, run.check()
}

// measureCost is measure, with the side's CPU time and allocations per
// task over the run.
func (s *grpcSide) measureCost(ctx context.Context, n, inFlight int) (*grpcRun, error) {
	// Reading the count allocates too (a metrics scrape does, a lot):
	// read it twice, and take the difference as the cost of one reading.
	m0, err1 := s.mallocs(ctx)
	m1, err2 := s.mallocs(ctx)
	cpu0, err3 := s.proc.cpuTime()
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	run, err := s.measure(ctx, n, 0, inFlight)
	if err != nil {
		return nil, err
	}
	cpu1, err1 := s.proc.cpuTime()
	m2, err2 := s.mallocs(ctx)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	run.cpu = cpu1 - cpu0
	run.mallocs = max(0, m2-m1-(m1-m0))
	return run, nil
}

// mallocs is the side's heap allocations so far: go_memstats_mallocs_total
// for the service; the baseline prints runtime.MemStats.Mallocs on SIGUSR1.
func (s *grpcSide) mallocs(ctx context.Context) (float64, error) {
	if s.svc != nil {
		return s.svc.metric("go_memstats_mallocs_total")
	}
	if err := s.proc.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return 0, err
	}
	select {
	case line := <-s.proc.lines:
		v, ok := strings.CutPrefix(line, "mallocs ")
		if !ok {
			return 0, fmt.Errorf("%s: unexpected line %q", s.proc.name, line)
		}
		return strconv.ParseFloat(v, 64)
	case <-s.proc.exited:
		return 0, fmt.Errorf("%s exited: %v", s.proc.name, s.proc.err)
	case <-time.After(5 * time.Second):
		return 0, fmt.Errorf("%s did not report its allocations", s.proc.name)
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
}

// send delivers task i: a push of its own on a goroutine (a push waits for
// its ack, which must not hold the schedule back), or into the executor's
// stream queue on the engine.
func (run *grpcRun) send(ctx context.Context, i int) {
	if run.side.transport != "push" {
		run.side.engine.enqueue(run.side.executorID, run.task(i))
		return
	}
	run.pushes.Go(func() { run.pushTask(ctx, i) })
}

// taskContext is every streamed task's context, shared: a message is only
// read once built.
var taskContext, _ = structpb.NewStruct(map[string]any{"amount": 125.5})

// task is task i as StreamTasks and ExecuteStream carry it.
func (run *grpcRun) task(i int) *gamelanv1.ExecutionTask {
	index := strconv.Itoa(i)
	return &gamelanv1.ExecutionTask{
		TaskId: "t" + index, RunId: run.id, NodeId: "n" + index, NodeType: "calculate-tax",
		Attempt: 1, ExecutionToken: "token", Context: taskContext, ScheduledAt: timestamppb.Now(),
	}
}

// pushTask pushes task i as the Gamelan engine does: string variables and
// the signature naming the executor.
func (run *grpcRun) pushTask(ctx context.Context, i int) {
	req := &dispatcherpb.ExecutionRequest{
		RunId: run.id, NodeId: "n" + strconv.Itoa(i), Attempt: 1,
		Variables: map[string]string{"amount": "125.50"}, Signature: run.signature,
	}
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, pushTimeout)
		ack, err := run.side.push.Execute(callCtx, req)
		cancel()
		switch {
		case err != nil:
			run.sendErrors.Add(1)
			return
		case ack.GetAccepted():
			return
		}
		run.refused.Add(1)
		message := fmt.Sprintf("%d %s", ack.GetCode(), ack.GetMessage())
		run.refusal.CompareAndSwap(nil, &message)
		if attempt == pushAttempts || pushRetry.Wait(ctx, attempt-1) != nil {
			return
		}
	}
}

// result takes a result the engine received for this run.
func (run *grpcRun) result(r *gamelanv1.TaskResult) {
	tax := r.GetOutput().GetFields()["tax"].GetNumberValue()
	if r.GetStatus() != gamelanv1.TaskStatus_TASK_STATUS_COMPLETED || math.Abs(tax-expectedTax) > 1e-9 {
		run.failed.Add(1)
	}
	if !run.rec.answer(taskIndex(r.GetNodeId())) {
		run.duplicates.Add(1)
	}
}

// await waits until every task has an answer (true), or until the
// deadline while answers still come (false). Answers that stop coming for
// quietLimit are an error: the tasks left are lost.
func (run *grpcRun) await(ctx context.Context, deadline time.Time) (bool, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, lastChange := 0, time.Now()
	for {
		select {
		case <-run.rec.all:
			return true, nil
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case now := <-tick.C:
			if c := run.rec.count(); c != last {
				last, lastChange = c, now
			}
			if now.Sub(lastChange) > quietLimit {
				return false, fmt.Errorf("%d of %d tasks never answered (nothing for %s; %d pushes failed, %d refused%s; %d results of no current run so far)",
					run.n-last, run.n, quietLimit, run.sendErrors.Load(), run.refused.Load(), run.refusalText(), run.side.engine.stale.Load())
			}
			if now.After(deadline) {
				return false, nil
			}
		}
	}
}

// cut ends a run at the deadline: each unanswered task is given the
// latency it had reached.
func (run *grpcRun) cut(now time.Time) {
	run.unanswered = run.rec.censor(now)
	run.cutAt = now.Sub(run.rec.start)
}

// check fails a run with a wrong or missing result.
func (run *grpcRun) check() error {
	if n := run.failed.Load(); n > 0 {
		return fmt.Errorf("%s: %d results not COMPLETED with tax %v", run.side.executorID, n, expectedTax)
	}
	if n := run.sendErrors.Load(); n > 0 {
		return fmt.Errorf("%s: %d pushes failed", run.side.executorID, n)
	}
	return nil
}

// elapsed is the run's length: from its start to its last result, or to
// the deadline when it was cut.
func (run *grpcRun) elapsed() time.Duration {
	if run.unanswered > 0 {
		return run.cutAt
	}
	return run.rec.end.Sub(run.rec.start)
}

// refusalText is ", first: <code> <message>" of the run's first refused
// push, or "".
func (run *grpcRun) refusalText() string {
	if m := run.refusal.Load(); m != nil {
		return ", first: " + *m
	}
	return ""
}
