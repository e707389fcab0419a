package component

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/pkg/executor"
)

// The trace context the engine sends in these tests: a sampled W3C
// traceparent, a tracestate and a baggage, each recognisable.
const (
	sentTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	sentTraceParent = "00-" + sentTraceID + "-00f067aa0ba902b7-01"
	sentTraceState  = "vendor=opaque"
	sentBaggage     = "tenant=acme,region=eu"
	traceProbeType  = "trace-probe"
)

var sentTrace = domain.TraceContext{TraceParent: sentTraceParent, TraceState: sentTraceState, Baggage: sentBaggage}

// traceProbe is an executor that records the task each handler call
// receives: its trace context and a copy of its context.
type traceProbe struct {
	mu   sync.Mutex
	seen map[string]domain.Task // by node id
}

func newTraceProbe() *traceProbe { return &traceProbe{seen: make(map[string]domain.Task)} }

func (p *traceProbe) Descriptor() executor.Descriptor {
	return executor.Descriptor{Type: traceProbeType, CommunicationType: executor.GRPC, SupportedNodeTypes: []string{traceProbeType}, MaxConcurrentTasks: 4}
}

func (p *traceProbe) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := *task
	seen.Context = maps.Clone(task.Context)
	p.seen[task.NodeID] = seen
	return executor.Success(map[string]any{"ok": true}), nil
}

// task returns the task the handler received for node.
func (p *traceProbe) task(t *testing.T, node string) domain.Task {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	task, ok := p.seen[node]
	require.True(t, ok, "the handler never received node %s", node)
	return task
}

// startProbeService runs the service hosting only the probe, with vars.
func startProbeService(t *testing.T, vars map[string]string, probe *traceProbe) *running {
	t.Helper()
	vars = maps.Clone(vars)
	vars["GAMELAN_EXECUTOR_ENABLED_TYPES"] = traceProbeType
	return start(t, nil, func(ctx context.Context, stdout, stderr io.Writer) error {
		return service.RunHosting(ctx, nil, env(vars), stdout, stderr, []executor.Executor{probe})
	})
}

// traceIDOf is the trace id of a version 00 traceparent, "" when it has none.
func traceIDOf(traceParent string) string {
	parts := strings.Split(traceParent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}

// requireHandlerSawTrace asserts that the handler received want as the
// task's trace context, and none of the reserved keys in its context.
func requireHandlerSawTrace(t *testing.T, task domain.Task, want domain.TraceContext) {
	t.Helper()
	require.NotNil(t, task.Trace, "the handler's task has no trace context")
	got := task.Trace
	assert.Equal(t, want.TraceParent, got.TraceParent, "traceparent")
	assert.Equal(t, want.TraceState, got.TraceState, "tracestate")
	assert.Equal(t, want.Baggage, got.Baggage, "baggage")
	assert.Equal(t, want.InContext, got.InContext, "InContext")
	for _, key := range []string{domain.TraceParentKey, domain.TraceStateKey, domain.BaggageKey} {
		assert.NotContains(t, task.Context, key, "a reserved key reached the handler's context")
	}
}

// requireSameTrace asserts that a result's trace context continues sent's
// trace: the echo with tracing off, a child span when on.
func requireSameTrace(t *testing.T, got domain.TraceContext) {
	t.Helper()
	require.NotEmpty(t, got.TraceParent, "the result carried no traceparent back: %+v", got)
	assert.Equal(t, sentTraceID, traceIDOf(got.TraceParent), "trace id of the result's traceparent %q", got.TraceParent)
	assert.Equal(t, sentTraceState, got.TraceState, "tracestate")
	assert.Equal(t, sentBaggage, got.Baggage, "baggage")
}

// TestTraceContextOverPush sends a task's trace context in the push call's
// metadata: the handler receives it as the task's Trace, and the result
// brings it back in the metadata of the ReportResults call that carries it
// alone. A malformed traceparent is kept as text, and an oversized
// baggage dropped: neither fails the task.
func TestTraceContextOverPush(t *testing.T) {
	t.Parallel()
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	probe := newTraceProbe()
	r := startProbeService(t, serviceEnv(addr, "push"), probe)
	waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
	const executorID = "executor-trace-probe-test"
	reg, ok := engine.Registration(executorID)
	require.True(t, ok, "registered: %v", engine.Registrations())

	push := func(node string, tc domain.TraceContext, extra ...string) {
		t.Helper()
		before := len(engine.UniqueResults())
		ctx := metadata.NewOutgoingContext(deadline(t, conditionTimeout), metadata.Join(grpcengine.TraceMetadata(&tc), metadata.Pairs(extra...)))
		ack, err := engine.Push(ctx, reg.GetEndpoint(), &dispatcherpb.ExecutionRequest{
			RunId: "run-trace", NodeId: node, Attempt: 1, Signature: grpctest.Signature("run-trace", executorID),
			Variables: map[string]string{domain.TraceParentKey: "00-ffffffffffffffffffffffffffffffff-00f067aa0ba902b7-01"},
		})
		require.NoError(t, err)
		require.True(t, ack.GetAccepted(), "ack: %v", ack)
		require.NoError(t, engine.WaitForResults(deadline(t, conditionTimeout), before+1))
	}

	// The call's metadata wins over a reserved key in the variables, which
	// is removed all the same.
	push("traced", sentTrace)
	requireHandlerSawTrace(t, probe.task(t, "traced"), sentTrace)
	back, ok := engine.ResultTrace("run-trace:traced:1")
	require.True(t, ok)
	assert.False(t, back.InContext, "a push's result carries its trace context in the call's metadata")
	requireSameTrace(t, back)
	res := engine.UniqueResults()["run-trace:traced:1"]
	assert.NotContains(t, res.GetOutput().GetFields(), domain.TraceParentKey, "a push's result has no reserved key in its output")

	hostile := domain.TraceContext{TraceParent: "not a traceparent", TraceState: sentTraceState, Baggage: strings.Repeat("k=v,", 3000)}
	push("hostile", hostile, "traceparent-bin", "x")
	requireHandlerSawTrace(t, probe.task(t, "hostile"), domain.TraceContext{TraceParent: "not a traceparent", TraceState: sentTraceState})
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, engine.UniqueResults()["run-trace:hostile:1"].GetStatus())
}

// TestTraceContextOverStreams sends a task's trace context in the reserved
// keys of the task's context on StreamTasks and ExecuteStream: the handler
// receives it as the task's Trace (InContext) and never sees the keys, and
// the result brings it back under the same keys in its output.
func TestTraceContextOverStreams(t *testing.T) {
	t.Parallel()
	for _, intake := range []string{"stream", "bidi"} {
		t.Run(intake, func(t *testing.T) {
			t.Parallel()
			engine := grpctest.NewEngine()
			addr := engine.Start(t)
			probe := newTraceProbe()
			r := startProbeService(t, serviceEnv(addr, intake), probe)
			waitForStatus(t, r.baseURL, "/q/health/ready", http.StatusOK)
			const executorID = "executor-trace-probe-test"

			vars, err := structpb.NewStruct(map[string]any{"amount": 1.0})
			require.NoError(t, err)
			task := &gamelanv1.ExecutionTask{TaskId: "task-traced", RunId: "run-" + intake, NodeId: "traced", NodeType: traceProbeType,
				Attempt: 1, ExecutionToken: "token", Context: vars}
			grpcengine.PutTraceInContext(task, &sentTrace)
			engine.Enqueue(executorID, task)
			require.NoError(t, engine.WaitForResults(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())

			want := sentTrace
			want.InContext = true
			seen := probe.task(t, "traced")
			requireHandlerSawTrace(t, seen, want)
			assert.Equal(t, 1.0, seen.Context["amount"], "the rest of the context reaches the handler")
			back, ok := engine.ResultTrace("run-" + intake + ":traced:1")
			require.True(t, ok)
			assert.True(t, back.InContext, "a streamed task's result carries its trace context in its output")
			requireSameTrace(t, back)
			assert.Equal(t, true, engine.UniqueResults()["run-"+intake+":traced:1"].GetOutput().AsMap()["ok"], "the handler's output is kept")
		})
	}
}

// TestTraceContextOverKafka sends a task's trace context in the task
// record's headers: the handler receives it, and the result record brings
// it back in its headers. Oversized values are dropped without failing the
// task.
func TestTraceContextOverKafka(t *testing.T) {
	t.Parallel()
	broker := kafkatest.Start(t)
	vars := kafkaEnv(broker)
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = traceProbeType + "=kafka"
	probe := newTraceProbe()
	r := startProbeService(t, vars, probe)
	require.NoError(t, broker.WaitGroupStable(deadline(t, conditionTimeout), kafkaGroup, 1), "logs:\n%s", r.logs.text())
	results := broker.NewReader(t, kafkatest.ResultsTopic)

	produce := func(node string, headers map[string]string) {
		t.Helper()
		msg := kafka.TaskMessage{RunID: "run-kafka", NodeID: node, Attempt: 1, ExecutorType: traceProbeType,
			Context: map[string]any{"__node_type__": traceProbeType}}
		require.NoError(t, broker.ProduceJSON(deadline(t, conditionTimeout), kafkatest.TasksTopic, msg.RunID, msg, headers))
	}
	produce("traced", map[string]string{"traceparent": sentTraceParent, "tracestate": sentTraceState, "baggage": sentBaggage})
	produce("oversized", map[string]string{"traceparent": sentTraceParent, "tracestate": strings.Repeat("a", domain.MaxTraceStateBytes+1)})
	require.NoError(t, results.WaitFor(deadline(t, conditionTimeout), 2), "logs:\n%s", r.logs.text())

	requireHandlerSawTrace(t, probe.task(t, "traced"), sentTrace)
	requireHandlerSawTrace(t, probe.task(t, "oversized"), domain.TraceContext{TraceParent: sentTraceParent})
	byNode := map[string]kafkatest.Record{}
	for _, rec := range results.Records() {
		byNode[nodeOf(t, rec.Value)] = rec
	}
	traced := byNode["traced"]
	requireSameTrace(t, domain.TraceContext{TraceParent: traced.Headers["traceparent"], TraceState: traced.Headers["tracestate"], Baggage: traced.Headers["baggage"]})
	assert.Equal(t, sentTraceID, traceIDOf(byNode["oversized"].Headers["traceparent"]))
	assert.NotContains(t, byNode["oversized"].Headers, "tracestate", "an oversized tracestate is dropped, not sent back")
	assert.Contains(t, string(byNode["oversized"].Value), `"status":"COMPLETED"`)
}

// nodeOf reads a result record's node id.
func nodeOf(t *testing.T, value []byte) string {
	t.Helper()
	i := strings.Index(string(value), `"nodeId":"`)
	require.GreaterOrEqual(t, i, 0, "no nodeId in %s", value)
	rest := string(value)[i+len(`"nodeId":"`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// TestTraceContextOverREST posts a task with its trace context in the W3C
// headers: the handler receives it, and the result, answered on the
// results topic (REST_RESULT_SINK=kafka), brings it back in the record's
// headers.
func TestTraceContextOverREST(t *testing.T) {
	t.Parallel()
	registry := resttest.Start(t)
	broker := kafkatest.Start(t)
	vars := httpRegistrarEnv(registry)
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = traceProbeType + "=rest"
	vars["GAMELAN_EXECUTOR_INSTANCE_ID"] = "rest-0"
	vars["GAMELAN_EXECUTOR_REST_HOST"] = "127.0.0.1"
	vars["GAMELAN_EXECUTOR_REST_PORT"] = "0"
	vars["GAMELAN_EXECUTOR_REST_RESULT_SINK"] = "kafka"
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = strings.Join(broker.Addrs(), ",")
	const executorID = "executor-trace-probe-rest-0"
	probe := newTraceProbe()
	r := startProbeService(t, vars, probe)
	waitForRegistry(t, r, registry, "the registration", func() bool { return registry.RegisterCalls(executorID) > 0 })
	info, _ := registry.Executor(executorID)
	waitForReadiness(t, r, registry, http.StatusOK)
	results := broker.NewReader(t, kafkatest.ResultsTopic)

	answer, err := resttest.PostTask(deadline(t, conditionTimeout), nil, info.Endpoint, resttest.TaskPost{
		ExecutorID: executorID, RunID: "run-rest", NodeID: "traced", Attempt: 1, IdempotencyKey: "run-rest:traced:1",
		Header: http.Header{"Traceparent": {sentTraceParent}, "Tracestate": {"vendor=opaque"}, "Baggage": {"tenant=acme", "region=eu"}},
	})
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	require.NoError(t, results.WaitFor(deadline(t, conditionTimeout), 1), "logs:\n%s", r.logs.text())

	requireHandlerSawTrace(t, probe.task(t, "traced"), sentTrace)
	rec := results.Records()[0]
	requireSameTrace(t, domain.TraceContext{TraceParent: rec.Headers["traceparent"], TraceState: rec.Headers["tracestate"], Baggage: rec.Headers["baggage"]})
	assert.Contains(t, string(rec.Value), fmt.Sprintf(`"nodeId":%q`, "traced"))
}
