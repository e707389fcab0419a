package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
)

// lockedBuffer is a bytes.Buffer the runtime's workers may log to while
// the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A panicking handler's "task finished" line carries the panic value and
// the top of its stack, where the handler panicked, bounded whatever the
// stack's size, so that an operator reading the executor's own log finds
// the fault without the engine's copy of the result (issue 14).
func TestPanicIsLoggedWithTheTopOfItsStack(t *testing.T) {
	ex := funcExecutor{
		desc: domain.Descriptor{Type: "fragile", MaxConcurrentTasks: 1},
		run: func(context.Context, *domain.Task) (*domain.Result, error) {
			return deepPanic(200), nil
		},
	}
	var out lockedBuffer
	ev := &events{}
	source, sink, control := newFakeSource(ev, "t"), &fakeSink{events: ev}, &fakeControl{events: ev}
	rt, err := app.New(testConfig(),
		[]app.Hosted{{Executor: ex, Registration: domain.Registration{ExecutorID: "test-fragile", Endpoint: "127.0.0.1:1"}, Transport: "t"}},
		[]app.Transport{{Name: "t", Source: source, Sink: sink}}, control, control,
		slog.New(slog.NewJSONHandler(&out, nil)))
	require.NoError(t, err)
	h := &harness{rt: rt, events: ev, sources: map[string]*fakeSource{"t": source}, sinks: map[string]*fakeSink{"t": sink}, control: control}
	h.run(t)

	require.NoError(t, source.mustOffer(t, task("run", "boom", 1)).wait(t))
	res := sink.byKey(t, "run:boom:1")
	require.Equal(t, domain.CodePanic, res.Error.Code)
	require.Greater(t, len(res.Error.StackTrace), 2<<10, "the stack should be deeper than the log's bound")

	var line map[string]any
	for _, raw := range strings.Split(out.String(), "\n") {
		if strings.Contains(raw, `"msg":"task finished"`) {
			require.NoError(t, json.Unmarshal([]byte(raw), &line))
		}
	}
	require.NotNil(t, line, "no task finished line in:\n%s", out.String())
	assert.Equal(t, domain.CodePanic, line["code"])
	assert.Contains(t, line["error"], "deep trouble")
	stack, _ := line["stack"].(string)
	assert.Contains(t, stack, "misbehaving_test.go", "the logged stack shows where the handler panicked")
	assert.LessOrEqual(t, len(stack), 1<<10+32, "the logged stack is bounded")
}

// deepPanic recurses depth times, then panics: a stack far longer than a
// log line should hold.
func deepPanic(depth int) *domain.Result {
	if depth == 0 {
		panic("deep trouble")
	}
	return deepPanic(depth - 1)
}

// A handler that watches its context returns as soon as its deadline
// passes; it must not be taken for one that ignores its context. When it
// was (the runtime looked for its answer only in the instant the context
// ended), it held its slot as abandoned, and with both slots of its type so
// held at once, the tasks queued behind were answered HANDLERS_STALLED
// without running (issue 14): most of them, with deadlines that coincide.
func TestHandlerWatchingItsContextIsNotTakenForStalled(t *testing.T) {
	watching := funcExecutor{desc: domain.Descriptor{Type: "slow", MaxConcurrentTasks: 2},
		run: func(ctx context.Context, _ *domain.Task) (*domain.Result, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
	obs := &recordingObserver{finished: map[string]int{}, refused: map[string]int{}}
	cfg := testConfig()
	cfg.Workers, cfg.QueueSize, cfg.Observer = 2, 64, obs
	h := newHarness(t, cfg, on("t", watching))
	h.run(t)

	const tasks = 40
	var settled []*settlement
	for i := range tasks {
		slow := task("r", fmt.Sprintf("n%d", i), 1)
		slow.Timeout = 5 * time.Millisecond
		settled = append(settled, h.sources["t"].mustOffer(t, slow))
	}
	for _, s := range settled {
		require.NoError(t, s.wait(t))
	}
	codes := map[string]int{}
	for _, res := range h.sinks["t"].all() {
		codes[res.Error.Code]++
	}
	assert.Equal(t, map[string]int{domain.CodeTimeout: tasks}, codes, "every task runs and times out")
	obs.mu.Lock()
	defer obs.mu.Unlock()
	// Abandoned, a handler would have had to wait 100 ms for its goroutine
	// to run: possible on a machine frozen for that long, never the rule.
	assert.Less(t, obs.abandoned, tasks/4, "handlers that returned at their deadline were reported abandoned")
}
