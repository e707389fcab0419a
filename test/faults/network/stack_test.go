// Package network runs the executor service against the reference engine
// with a fault-injecting TCP proxy (testkit.Proxy) on every connection
// between them, and counts what a partition, a slow link and a lossy link
// do to a load of tasks (testkit.Outcome).
//
// The engine is internal/devengine, in process: it pushes tasks through
// the push proxy to the executor's advertised endpoint (the proxy's
// address), or queues them on the streams the executor opens through the
// engine proxy; it retries a push that failed or was refused, and hands a
// task sent on a stream that closed out again once its result is overdue.
// So a task is lost only if the executor (or the engine) loses it, and
// every scenario asserts that none is.
package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/devengine"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/test/testkit"
)

// waitLong bounds every wait for the system to do something; the machine
// may be busy, so it is generous.
const waitLong = 90 * time.Second

// taxType is the executor type the scenarios load, and executorID its id
// with GAMELAN_EXECUTOR_INSTANCE_ID=faults.
const taxType, executorID = "calculate-tax", "executor-calculate-tax-faults"

// stack is the reference engine and the executor service with a proxy on
// each path between them: engineProxy carries every call the executor
// makes (registration, heartbeats, task streams, results), pushProxy every
// push the engine makes.
type stack struct {
	engine                 *devengine.Engine
	engineGRPC             *devengine.GRPC
	engineProxy, pushProxy *testkit.Proxy
	results                *resultTap
	serviceLog             *serviceLog
	engineLog              *testkit.SyncBuffer
	outcome                *testkit.Outcome

	mu    sync.Mutex
	tasks []submitted
}

// submitted is a task the scenario handed to the engine.
type submitted struct {
	id, key string
	amount  float64
	at      time.Time
}

// startStack starts the engine, the proxies and the service, with the
// service's gRPC intake set to intake, and waits until the executor is
// registered (and, for a pull intake, its stream open). link, unless nil,
// sets faults on both proxies before the service first connects. Every
// result the engine acknowledges is counted in o.
func startStack(t *testing.T, intake string, o *testkit.Outcome, link func(*testkit.Proxy)) *stack {
	t.Helper()
	s := &stack{results: newResultTap(o), serviceLog: newServiceLog(), engineLog: &testkit.SyncBuffer{}, outcome: o}
	engineLogger := slog.New(slog.NewTextHandler(s.engineLog, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The engine hands a task sent on a stream that closed out again 7 s
	// after the stream closed (its default: 5 min and 10 s), so that a
	// lossy link costs seconds, not minutes.
	s.engine = devengine.New(devengine.Config{TaskTimeout: 5 * time.Second, ResultGrace: 2 * time.Second, Log: engineLogger})
	s.engineGRPC = devengine.NewGRPC(s.engine, grpcengine.Config{
		ServerOptions: []grpc.ServerOption{grpc.ChainStreamInterceptor(s.results.intercept)},
	}, engineLogger)
	s.engine.SetDeliverer("GRPC", s.engineGRPC)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, s.engineGRPC.Server().Start(lis))
	runCtx, stopEngine := context.WithCancel(context.Background())
	engineDone := make(chan struct{})
	go func() {
		defer close(engineDone)
		_ = s.engine.Run(runCtx)
	}()
	t.Cleanup(func() {
		stopEngine()
		<-engineDone
		s.engineGRPC.Server().Close()
		if t.Failed() {
			t.Logf("engine log:\n%s", s.engineLog.String())
		}
	})

	s.engineProxy = testkit.NewProxy(t, lis.Addr().String())
	// The push server's port is known only once the service listens, and
	// the service must be told the proxy's address first: the proxy gets
	// its target then.
	s.pushProxy = testkit.NewProxy(t, "")
	if link != nil {
		link(s.engineProxy)
		link(s.pushProxy)
	}
	vars := map[string]string{
		"GAMELAN_EXECUTOR_HTTP_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                "0",
		"GAMELAN_EXECUTOR_GRPC_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":                "0",
		"GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT": s.pushProxy.Addr(),
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET":       s.engineProxy.Addr(),
		"GAMELAN_EXECUTOR_GRPC_INTAKE":              intake,
		"GAMELAN_EXECUTOR_ENABLED_TYPES":            taxType,
		"GAMELAN_EXECUTOR_INSTANCE_ID":              "faults",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                "info",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "5",
	}
	ctx, stopService := context.WithCancel(context.Background())
	serviceDone := make(chan error, 1)
	go func() {
		serviceDone <- service.RunHosting(ctx, nil, func(k string) string { return vars[k] },
			s.serviceLog, s.serviceLog, examples.All(examples.Config{}))
	}()
	t.Cleanup(func() {
		// Whatever the scenario left, the service stops on a healed link.
		s.engineProxy.Heal()
		s.pushProxy.Heal()
		stopService()
		select {
		case err := <-serviceDone:
			assert.NoError(t, err, "the service stopped with an error")
		case <-time.After(waitLong):
			t.Error("the service did not stop")
		}
		if t.Failed() {
			t.Logf("service log:\n%s", s.serviceLog.String())
		}
	})

	select {
	case addr := <-s.serviceLog.pushAddr:
		s.pushProxy.Retarget(addr)
	case err := <-serviceDone:
		t.Fatalf("the service stopped at start: %v\n%s", err, s.serviceLog.String())
	case <-time.After(waitLong):
		t.Fatalf("the push server never listened:\n%s", s.serviceLog.String())
	}
	require.NoError(t, s.waitEngine(func() bool {
		ex, ok := s.engine.Executor(executorID)
		return ok && ex.Healthy && (intake == "push" || s.engineGRPC.Server().OpenStreams(executorID) > 0)
	}), "the executor never registered (or opened its stream)")
	return s
}

// waitEngine waits until cond holds, checking it at every change of the
// engine (tasks, results, registrations), for at most waitLong.
func (s *stack) waitEngine(cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	return s.engine.WaitUntil(ctx, cond)
}

// taxAmount is the amount of the i-th task: varied, with a fractional
// part, so that every task's tax can be told apart.
func taxAmount(i int) float64 { return float64(i)*1.25 + 0.37 }

// submit hands one calculate-tax task to the engine and records it. Only
// the load's goroutine submits.
func (s *stack) submit() error {
	s.mu.Lock()
	amount := taxAmount(len(s.tasks))
	s.mu.Unlock()
	task, err := s.engine.Submit(devengine.TaskSpec{ExecutorType: taxType, Context: map[string]any{"amount": amount}})
	if err != nil {
		return err
	}
	sub := submitted{id: task.ID, key: domain.IdempotencyKey(task.RunID, task.NodeID, task.Attempt), amount: amount, at: time.Now()}
	s.outcome.Submitted(sub.key)
	s.mu.Lock()
	s.tasks = append(s.tasks, sub)
	s.mu.Unlock()
	return nil
}

// submitOne submits one task, failing t if the engine refuses it.
func (s *stack) submitOne(t *testing.T) submitted {
	t.Helper()
	require.NoError(t, s.submit())
	tasks := s.submitted()
	return tasks[len(tasks)-1]
}

// submitted returns the tasks submitted so far, in order.
func (s *stack) submitted() []submitted {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tasks)
}

// load submits tasks at perSecond until stop is closed, then closes the
// channel it returned. Submission is paced by a ticker, as an engine's
// workflows would produce tasks, whatever happens to the network.
func (s *stack) load(t *testing.T, perSecond int, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if err := s.submit(); err != nil {
					t.Errorf("submit: %v", err)
					return
				}
			}
		}
	}()
	return done
}

// partition blackholes both paths between the executor and the engine.
func (s *stack) partition() {
	s.engineProxy.Blackhole()
	s.pushProxy.Blackhole()
}

// heal lifts every fault on both paths.
func (s *stack) heal() {
	s.engineProxy.Heal()
	s.pushProxy.Heal()
}

// waitAllAnswered waits until every task submitted has a result the engine
// acknowledged.
func (s *stack) waitAllAnswered(t *testing.T) {
	t.Helper()
	keys := make([]string, 0)
	for _, sub := range s.submitted() {
		keys = append(keys, sub.key)
	}
	if err := s.results.waitFor(keys, waitLong); err != nil {
		t.Errorf("%v; engine counters %+v", err, s.engine.Counters())
	}
}

// checkResults asserts that the engine holds, for every task submitted, a
// COMPLETED result with the right tax: a network fault may cost time and
// duplicates, never a wrong answer.
func (s *stack) checkResults(t *testing.T) {
	t.Helper()
	wrong := 0
	for _, sub := range s.submitted() {
		task, ok := s.engine.Task(sub.id)
		if !assert.True(t, ok, "the engine forgot %s", sub.id) {
			continue
		}
		if task.State != string(domain.StatusCompleted) || task.Result == nil {
			wrong++
			assert.Failf(t, "task not completed", "%s (%s): state %s, result %+v", sub.id, sub.key, task.State, task.Result)
			continue
		}
		if tax, _ := task.Result.Output["tax"].(float64); !assert.InDelta(t, sub.amount*0.1, tax, 1e-9, "tax of %s", sub.key) {
			wrong++
		}
		if wrong > 10 {
			t.Fatal("too many wrong results; stopping")
		}
	}
}

// redeliveries counts the deliveries beyond the first over every task:
// pushes retried, tasks handed out again.
func (s *stack) redeliveries() int {
	n := 0
	for _, sub := range s.submitted() {
		if task, ok := s.engine.Task(sub.id); ok && task.Deliveries > 1 {
			n += task.Deliveries - 1
		}
	}
	return n
}

// latencies returns the engine's submit-to-result latency of each of
// tasks (every task submitted, when none are named), sorted.
func (s *stack) latencies(tasks ...submitted) []time.Duration {
	if len(tasks) == 0 {
		tasks = s.submitted()
	}
	var out []time.Duration
	for _, sub := range tasks {
		if task, ok := s.engine.Task(sub.id); ok && task.Final() {
			out = append(out, task.CompletedAt.Sub(task.SubmittedAt))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// percentile of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))].Milliseconds()
}

// proxyNotes summarises a proxy's counts for an outcome's notes.
func proxyNotes(p *testkit.Proxy) map[string]any {
	st := p.Stats()
	return map[string]any{"accepted": st.Accepted, "resets": st.Resets, "dropped": st.Dropped, "refused": st.Refused,
		"bytesToTarget": st.ToTarget, "bytesToClient": st.ToClient}
}

// resultTap watches the engine's ReportResults calls: every result of a
// batch the engine took whole (it read the batch to its end, then handed
// it to the engine, which records results before answering) is counted in
// the outcome, duplicates included, and the first such arrival of each
// task is timed.
type resultTap struct {
	outcome *testkit.Outcome

	mu      sync.Mutex
	first   map[string]time.Time // by task key
	changed chan struct{}        // closed and replaced on every batch
}

func newResultTap(o *testkit.Outcome) *resultTap {
	return &resultTap{outcome: o, first: make(map[string]time.Time), changed: make(chan struct{})}
}

func (r *resultTap) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != gamelanv1.ExecutorService_ReportResults_FullMethodName {
		return handler(srv, ss)
	}
	batch := &batchStream{ServerStream: ss}
	err := handler(srv, batch)
	if batch.whole {
		r.record(batch.results)
	}
	return err
}

func (r *resultTap) record(results []*gamelanv1.TaskResult) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range results {
		key := grpcengine.ResultKey(res)
		r.outcome.Answer(key)
		if _, ok := r.first[key]; !ok {
			r.first[key] = now
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// answeredAt returns when each task's first result arrived.
func (r *resultTap) answeredAt() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.first))
	for k, v := range r.first {
		out[k] = v
	}
	return out
}

// waitCount waits until n tasks have a result, for at most d.
func (r *resultTap) waitCount(n int, d time.Duration) error {
	deadline := time.After(d)
	for {
		r.mu.Lock()
		have, changed := len(r.first), r.changed
		r.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			return fmt.Errorf("%d tasks answered after %s, want %d", have, d, n)
		}
	}
}

// waitFor waits until every key has a result, for at most d.
func (r *resultTap) waitFor(keys []string, d time.Duration) error {
	deadline := time.After(d)
	for {
		r.mu.Lock()
		missing := 0
		for _, k := range keys {
			if _, ok := r.first[k]; !ok {
				missing++
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-deadline:
			return fmt.Errorf("%d of %d tasks still without a result after %s", missing, len(keys), d)
		}
	}
}

// batchStream records the results of one ReportResults call, and whether
// the call was read to its end.
type batchStream struct {
	grpc.ServerStream
	results []*gamelanv1.TaskResult
	whole   bool
}

func (b *batchStream) RecvMsg(m any) error {
	err := b.ServerStream.RecvMsg(m)
	switch {
	case errors.Is(err, io.EOF):
		b.whole = true
	case err == nil:
		if res, ok := m.(*gamelanv1.TaskResult); ok {
			b.results = append(b.results, proto.CloneOf(res))
		}
	}
	return err
}

// serviceLog keeps the service's output and reports the address its push
// server listens on.
type serviceLog struct {
	testkit.SyncBuffer
	pushAddr chan string

	mu      sync.Mutex
	partial []byte
}

func newServiceLog() *serviceLog { return &serviceLog{pushAddr: make(chan string, 1)} }

func (l *serviceLog) Write(p []byte) (int, error) {
	_, _ = l.SyncBuffer.Write(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		end := bytes.IndexByte(l.partial, '\n')
		if end < 0 {
			return len(p), nil
		}
		line := l.partial[:end]
		l.partial = l.partial[end+1:]
		var fields struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &fields) == nil && fields.Msg == "push server listening" {
			select {
			case l.pushAddr <- fields.Addr:
			default:
			}
		}
	}
}
