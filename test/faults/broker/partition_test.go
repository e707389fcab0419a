package broker

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/test/testkit"
)

// TestNetworkPartitionFromBrokerUnderLoad cuts the executor service off
// from the broker for 10 s in the middle of a load of calculate-tax tasks,
// then heals the network. The partition is a blackhole (testkit.Proxy),
// not a reset: the executor's connections stay open and what it or the
// broker sends meanwhile is held and delivered at the heal, as TCP would
// after a partition shorter than its retransmission timeout. Only the
// executor is cut off: the engine (the test's producer and readers) goes on
// writing tasks and reading results, so a quarter of the load is written
// during the partition and a quarter after it.
//
// It proves: every task record gets a result record (zero lost); the
// partition held (no task written during it was answered before the heal);
// no offset is committed before its task's result is on the results topic
// (commitAudit); at the end the group's committed offset of every partition
// equals the end of the tasks topic; the executor stays ready through the
// partition (asserted), and is ready again after it. Its Kafka client
// (sarama) waits up to 30 s (Net.ReadTimeout) for the answer to a
// heartbeat, so, as the executor sees it, its group session goes on until
// the heal, and the Kafka source counts its 5 s grace only from the
// session's end. The broker meanwhile expires the session once 10 s pass
// without a heartbeat, which a 10 s partition reaches or nearly: when it
// did, the first answers after the heal end the session and the executor
// rejoins, usually well within the grace. A partition shorter than sarama's
// read timeout therefore never shows on the readiness probe.
//
// It reports the duplicates (results whose delivery timed out during the
// partition and was retried while the first attempt was held; tasks read
// again after the rejoin because their commits were refused), the time from
// the heal to the first result written after it (Recovery: one held by the
// partition, usually), to the first result of a task written during the
// partition (notes.firstTaskOfPartitionAnsweredMs) and to every task
// answered (notes.allAnsweredMs); the results the broker wrote during the
// partition from requests already on their way at the cut
// (notes.resultsOnTheirWayAtCut), and after those
// (notes.resultsWrittenLaterInPartition: none when the partition held);
// the group's generation (3 when the broker expired the session); and every
// change of readiness seen.
func TestNetworkPartitionFromBrokerUnderLoad(t *testing.T) {
	t.Parallel()
	const partition = 10 * time.Second // the figure, in both variants
	total := testkit.Pick(1200, 12000)
	o := &testkit.Outcome{Scenario: "kafka network partition 10s, executor to broker", Notes: map[string]any{}}
	b := startProxiedBroker(t)
	audit := newCommitAudit(t, b.Broker)
	audit.install(b.Cluster())
	results := b.Results(t)
	engineView := b.NewReader(t, kafkatest.TasksTopic)
	ctx := within(t, testkit.Pick(3*time.Minute, 10*time.Minute))

	m := b.startTaxMember(t, "p1")
	b.requireJoined(t, ctx, m)
	readiness := watchReadiness(t, m)
	load := newTaxLoad(t, b.Broker, o)

	// In the middle of the load: half of it written, a part answered, the
	// rest queued in the topic or in the executor's hands.
	load.produce(ctx, "run-before", total/2)
	require.NoError(t, results.WaitForUnique(ctx, total/8), "%s; logs:\n%s", diagnose(b.Broker), m.logs.text())

	b.proxy.Blackhole()
	cut := markResults(t, b.Broker)
	// The engine is not partitioned: what it writes meanwhile is
	// acknowledged by the broker, and its reader of the tasks topic reads
	// it. Should that take longer than the partition, the partition lasts
	// until it is done.
	before := maps.Clone(load.tasks)
	load.produce(ctx, "run-during", total/4)
	load.flush(t, ctx)
	writtenDuring := keysSince(load, before)
	require.NoError(t, engineView.CatchUp(ctx), "the engine's reader is partitioned from the broker too")
	// By now the broker has written what was on its way to it at the cut.
	settled := markResults(t, b.Broker)
	select {
	case <-time.After(partition - time.Since(cut.at)):
	case <-ctx.Done():
		t.Fatal("the test ran out of time during the partition")
	}
	healed := markResults(t, b.Broker)
	b.proxy.Heal()
	load.produce(ctx, "run-after", total-load.produced)

	first, firstOfPartition, err := recoveryAfter(ctx, results, healed, writtenDuring)
	require.NoError(t, err, "no result after the heal of a task written during the partition; %s; logs:\n%s", diagnose(b.Broker), m.logs.text())
	o.Recovery = first
	o.Notes["firstTaskOfPartitionAnsweredMs"] = firstOfPartition.Milliseconds()
	load.flush(t, ctx)
	require.NoError(t, results.WaitForUnique(ctx, len(load.tasks)), "%s; logs:\n%s", diagnose(b.Broker), m.logs.text())
	o.Notes["allAnsweredMs"] = time.Since(healed.at).Milliseconds()
	require.Eventually(t, m.ready, waitLimit, 20*time.Millisecond, "the executor is ready again after the heal")

	committed := requireAllCommitted(t, ctx, b.Broker)
	duplicated := countAnswers(t, ctx, results, o, load.tasks)
	requireAnsweredAfter(t, results, healed, writtenDuring)
	figures := audit.require(t)
	changes := readiness.stop()
	requireReadyThrough(t, changes, cut.at, healed.at)

	o.Notes["partitionMs"] = healed.at.Sub(cut.at).Milliseconds()
	o.Notes["resultsWrittenBeforePartition"] = sum(cut.ends)
	o.Notes["resultsOnTheirWayAtCut"] = sum(settled.ends) - sum(cut.ends)
	o.Notes["resultsWrittenLaterInPartition"] = sum(healed.ends) - sum(settled.ends)
	o.Notes["tasksWrittenDuringPartition"] = len(writtenDuring)
	o.Notes["committed"] = committed
	o.Notes["generation"] = b.generation(t)
	o.Notes["duplicatedTasks"] = len(duplicated)
	o.Notes["commitsAudited"], o.Notes["commitsUnverified"] = figures.Commits, figures.Unverified
	o.Notes["readiness"] = readinessNotes(changes, cut.at, healed.at)
	o.Notes["proxy"] = proxyNotes(b.proxy)
	o.Check(t)
	require.NoError(t, m.stop())
}

// TestLossyLinkToBrokerUnderLoad makes the link between the executor and
// the broker reset a connection, instead of forwarding a chunk, with
// probability 1% (testkit.Proxy.DropRate), either way, under a steady load
// of calculate-tax tasks; the engine's own link is sound. Any of the
// executor's connections (fetches, result produces, heartbeats, offset
// commits) may be reset under it.
//
// It proves: every task record gets a result record (zero lost); the proxy
// did reset connections, at least three (the load goes on until it has);
// no offset is committed before its task's result is on the results topic
// (commitAudit); at the end the group's committed offset of every
// partition equals the end of the tasks topic, and the executor is ready
// (after the heal, which comes once every task is answered). It reports
// the resets, the duplicates they caused (a produce whose answer was lost
// is retried; a commit lost with its connection lets tasks be read again
// after a rebalance), how long the load took, and every change of
// readiness.
func TestLossyLinkToBrokerUnderLoad(t *testing.T) {
	t.Parallel()
	const dropRate, perSecond, minResets = 0.01, 100, 3
	tasks := testkit.Pick(1000, 10000)
	o := &testkit.Outcome{Scenario: "kafka lossy link 1% resets, executor to broker", Notes: map[string]any{}}
	b := startProxiedBroker(t)
	audit := newCommitAudit(t, b.Broker)
	audit.install(b.Cluster())
	results := b.Results(t)
	ctx := within(t, testkit.Pick(3*time.Minute, 10*time.Minute))

	m := b.startTaxMember(t, "lossy")
	b.requireJoined(t, ctx, m)
	readiness := watchReadiness(t, m)
	b.proxy.DropRate(dropRate)
	load := newTaxLoad(t, b.Broker, o)

	// A steady load, so that resets land on tasks in every stage; it goes
	// on past its size until the link has reset a few connections, which
	// it usually has long before (about one in a hundred chunks).
	began := time.Now()
	produceSteadily(ctx, load, "run-lossy", tasks, perSecond)
	for b.proxy.Stats().Dropped < minResets && ctx.Err() == nil {
		produceSteadily(ctx, load, "run-lossy", perSecond, perSecond)
	}
	load.flush(t, ctx)
	require.NoError(t, results.WaitForUnique(ctx, len(load.tasks)), "%s; logs:\n%s", diagnose(b.Broker), m.logs.text())
	took := time.Since(began)
	lossy := b.proxy.Stats()
	// Healed before the checks, which then need no more from the link
	// than the commits still on their way.
	b.proxy.Heal()
	require.GreaterOrEqual(t, lossy.Dropped, minResets, "too few connections were reset: the scenario proves little")
	require.Eventually(t, m.ready, waitLimit, 20*time.Millisecond, "the executor is ready after the load")

	committed := requireAllCommitted(t, ctx, b.Broker)
	duplicated := countAnswers(t, ctx, results, o, load.tasks)
	figures := audit.require(t)
	changes := readiness.stop()

	o.Notes["dropRate"] = dropRate
	o.Notes["submittedPerSec"] = perSecond
	o.Notes["seconds"] = took.Seconds()
	o.Notes["resets"] = lossy.Dropped
	o.Notes["committed"] = committed
	o.Notes["generation"] = b.generation(t)
	o.Notes["duplicatedTasks"] = len(duplicated)
	o.Notes["commitsAudited"], o.Notes["commitsUnverified"] = figures.Commits, figures.Unverified
	o.Notes["readiness"] = readinessNotes(changes, began, time.Time{})
	o.Notes["proxy"] = proxyNotes(b.proxy)
	o.Check(t)
	require.NoError(t, m.stop())
}

// TestSlowLinkToBrokerUnderLoad puts 50 ms of latency each way on the link
// between the executor and the broker, from before the executor first
// connects to the end; the engine's own link is sound. Tasks are written
// first one at a time, each once the previous one is answered (what a
// workflow's sequential steps pay), then as a burst.
//
// It proves: every task record gets a result record (zero lost); the link
// was slow (a task alone took at least a round trip: its fetch's answer one
// way and its result's produce the other); no offset is committed before
// its task's result is on the results topic (commitAudit); at the end the
// group's committed offset of every partition equals the end of the tasks
// topic. It reports the latency of a task alone, the throughput of the
// burst, the duplicates and the resets, of which there should be none:
// every timeout on the path is seconds long.
func TestSlowLinkToBrokerUnderLoad(t *testing.T) {
	t.Parallel()
	const delay = 50 * time.Millisecond
	alone, burst := testkit.Pick(10, 50), testkit.Pick(500, 5000)
	o := &testkit.Outcome{Scenario: "kafka slow link 50ms each way, executor to broker", Notes: map[string]any{}}
	b := startProxiedBroker(t)
	b.proxy.Delay(delay)
	audit := newCommitAudit(t, b.Broker)
	audit.install(b.Cluster())
	results := b.Results(t)
	ctx := within(t, testkit.Pick(3*time.Minute, 10*time.Minute))

	m := b.startTaxMember(t, "slow")
	b.requireJoined(t, ctx, m)
	load := newTaxLoad(t, b.Broker, o)

	var latencies []time.Duration
	for range alone {
		began := time.Now()
		load.produce(ctx, "run-alone", 1)
		require.NoError(t, results.WaitForUnique(ctx, load.produced), "%s; logs:\n%s", diagnose(b.Broker), m.logs.text())
		latencies = append(latencies, time.Since(began))
	}
	slices.Sort(latencies)
	assert.GreaterOrEqual(t, latencies[0], 2*delay, "a task was answered faster than the link allows")

	began := time.Now()
	load.produce(ctx, "run-burst", burst)
	load.flush(t, ctx)
	require.NoError(t, results.WaitForUnique(ctx, len(load.tasks)), "%s; logs:\n%s", diagnose(b.Broker), m.logs.text())
	took := time.Since(began)

	committed := requireAllCommitted(t, ctx, b.Broker)
	duplicated := countAnswers(t, ctx, results, o, load.tasks)
	figures := audit.require(t)

	o.Notes["delayEachWayMs"] = delay.Milliseconds()
	o.Notes["aloneTasks"] = alone
	o.Notes["aloneLatencyP50Ms"] = latencies[len(latencies)/2].Milliseconds()
	o.Notes["aloneLatencyMaxMs"] = latencies[len(latencies)-1].Milliseconds()
	o.Notes["burstTasks"] = burst
	o.Notes["burstSeconds"] = took.Seconds()
	o.Notes["burstTasksPerSec"] = float64(burst) / took.Seconds()
	o.Notes["committed"] = committed
	o.Notes["generation"] = b.generation(t)
	o.Notes["duplicatedTasks"] = len(duplicated)
	o.Notes["commitsAudited"], o.Notes["commitsUnverified"] = figures.Commits, figures.Unverified
	o.Notes["proxy"] = proxyNotes(b.proxy)
	o.Check(t)
	require.NoError(t, m.stop())
}

// produceSteadily hands n tasks to the load's producer, perSecond of them a
// second in tenths of a second, and returns once all are handed over.
func produceSteadily(ctx context.Context, load *taxLoad, run string, n, perSecond int) {
	tick := time.NewTicker(time.Second / 10)
	defer tick.Stop()
	for target := load.produced + n; load.produced < target; {
		load.produce(ctx, run, min(max(perSecond/10, 1), target-load.produced))
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// sum adds up offsets by partition.
func sum(ends map[int32]int64) int64 {
	var total int64
	for _, end := range ends {
		total += end
	}
	return total
}

// keysSince returns the keys of the tasks the load produced that were not
// among before.
func keysSince(l *taxLoad, before map[string]kafka.TaskMessage) map[string]bool {
	keys := make(map[string]bool)
	for key := range l.tasks {
		if _, ok := before[key]; !ok {
			keys[key] = true
		}
	}
	return keys
}

// recoveryAfter waits until results has read a result of one of keys
// written after the mark, and returns the time from the mark to the first
// result written after it, of any task (at a heal, one the executor
// produced during the partition, held until then), and to the first result
// of one of keys (tasks the executor could see only after the heal).
func recoveryAfter(ctx context.Context, results *kafkatest.ResultReader, mark resultMark, keys map[string]bool) (first, firstOfKeys time.Duration, err error) {
	scanned := 0
	err = results.WaitUntil(ctx, func(records []kafkatest.Record) bool {
		for _, r := range records[min(scanned, len(records)):] {
			if r.Offset < mark.ends[r.Partition] {
				continue
			}
			if first == 0 {
				first = time.Since(mark.at)
			}
			var res kafka.ResultMessage
			if json.Unmarshal(r.Value, &res) == nil && keys[kafkatest.ResultKey(res)] {
				firstOfKeys = time.Since(mark.at)
				return true
			}
		}
		scanned = len(records)
		return false
	})
	return first, firstOfKeys, err
}

// requireAnsweredAfter checks that every result of the tasks of keys was
// written after the mark: the executor could not have seen them before.
func requireAnsweredAfter(t *testing.T, results *kafkatest.ResultReader, mark resultMark, keys map[string]bool) {
	t.Helper()
	early := 0
	for _, r := range results.Records() {
		var res kafka.ResultMessage
		if json.Unmarshal(r.Value, &res) != nil || !keys[kafkatest.ResultKey(res)] {
			continue
		}
		if r.Offset < mark.ends[r.Partition] {
			early++
		}
	}
	assert.Zero(t, early, "results of tasks written during the partition were written before it healed")
}

// saramaNewest maps each request whose answer names brokers to the newest
// version of it the executor's client sends: sarama at Kafka 2.8 asks
// Metadata v11 and FindCoordinator v3. The test's own clients (franz-go)
// ask the newest kfake offers, Metadata v13 and FindCoordinator v6. Produce
// and Fetch answers name brokers too, but only with NOT_LEADER errors, which
// a cluster of one broker never returns.
var saramaNewest = map[kmsg.Key]int16{kmsg.Metadata: 11, kmsg.FindCoordinator: 3}

// proxiedBroker is a cluster of one broker that the executor reaches only
// through a testkit.Proxy, while the test's own clients (the engine's
// producer, the readers, the commit audit) reach it directly, so that the
// proxy's faults stand between the executor and the broker and nowhere
// else.
//
// kfake advertises a broker, in its answers to Metadata and
// FindCoordinator, at its listener's Addr (see
// TestBrokerAdvertisesTheAddressItsListenerReports). The listener here
// reports the proxy's address while the cluster answers a request of the
// executor's client, and its own otherwise: a control function on those two
// requests tells the clients apart by the version they ask (saramaNewest)
// and sets which. kfake runs the control functions of a request and then
// answers it on its one goroutine, so the choice holds for exactly that
// answer. The executor bootstraps on the proxy, so every connection it
// makes goes through it; the test's clients bootstrap on Addrs, the
// broker's own address (read from the listener at Start, before any
// control was installed), and are never told of the proxy.
type proxiedBroker struct {
	*kafkatest.Broker
	proxy *testkit.Proxy
	// viaProxy is set while the cluster answers a request of the
	// executor's client.
	viaProxy atomic.Bool
	// toExecutor counts the answers that named the proxy.
	toExecutor atomic.Int64
}

// startProxiedBroker starts the cluster, its proxy, and the controls that
// tell the executor's requests from the test's.
func startProxiedBroker(t *testing.T) *proxiedBroker {
	t.Helper()
	b := &proxiedBroker{proxy: testkit.NewProxy(t, "")}
	proxyAddr, err := net.ResolveTCPAddr("tcp", b.proxy.Addr())
	require.NoError(t, err)
	listen := kfake.ListenFn(func(network, address string) (net.Listener, error) {
		_, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen(network, net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			return nil, err
		}
		b.proxy.Retarget(ln.Addr().String())
		return splitListener{Listener: ln, proxy: proxyAddr, viaProxy: &b.viaProxy}, nil
	})
	b.Broker = kafkatest.Start(t, kafkatest.WithClusterOptions(listen))
	cluster := b.Cluster()
	for key, newest := range saramaNewest {
		cluster.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			executor := req.GetVersion() <= newest
			b.viaProxy.Store(executor)
			if executor {
				b.toExecutor.Add(1)
			}
			return nil, nil, false // not handled: the cluster answers, naming the address just chosen
		})
	}
	return b
}

// startTaxMember starts a member hosting calculate-tax that bootstraps on
// the proxy.
func (b *proxiedBroker) startTaxMember(t *testing.T, name string) *member {
	t.Helper()
	vars := memberEnv(b.Broker, name)
	vars["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"] = b.proxy.Addr()
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "calculate-tax=kafka" // it declares gRPC
	return startMember(t, name, vars, examples.CalculateTax{})
}

// requireJoined waits until the member has joined its group and is ready,
// and checks that it was told of the proxy and connects through it.
func (b *proxiedBroker) requireJoined(t *testing.T, ctx context.Context, m *member) {
	t.Helper()
	require.NoError(t, b.WaitGroupStable(ctx, group, 1), "logs:\n%s", m.logs.text())
	// The broker sees the group stable before the member has its answer.
	require.Eventually(t, m.ready, waitLimit, 20*time.Millisecond, "the executor is ready once in its group; logs:\n%s", m.logs.text())
	require.Positive(t, b.toExecutor.Load(), "no answer to the executor named the proxy")
	require.Positive(t, b.proxy.Stats().Open, "the executor has no connection through the proxy")
}

// splitListener is a broker's listener that reports the proxy's address
// as its own while viaProxy is set.
type splitListener struct {
	net.Listener
	proxy    net.Addr
	viaProxy *atomic.Bool
}

// Addr implements net.Listener.
func (l splitListener) Addr() net.Addr {
	if l.viaProxy.Load() {
		return l.proxy
	}
	return l.Listener.Addr()
}

// readinessChange is a change of a member's readiness, or its first sample.
type readinessChange struct {
	at    time.Time
	ready bool
}

// readinessWatch samples a member's readiness probe, which announces
// nothing, every readinessEvery, and records each change.
type readinessWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changes []readinessChange
}

// readinessEvery is how often a readinessWatch samples.
const readinessEvery = 50 * time.Millisecond

// watchReadiness samples m's readiness until stop, or the end of t.
func watchReadiness(t *testing.T, m *member) *readinessWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &readinessWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(readinessEvery)
		defer tick.Stop()
		for {
			ready := m.ready()
			w.mu.Lock()
			if n := len(w.changes); n == 0 || w.changes[n-1].ready != ready {
				w.changes = append(w.changes, readinessChange{at: time.Now(), ready: ready})
			}
			w.mu.Unlock()
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

// stop stops sampling and returns the changes seen.
func (w *readinessWatch) stop() []readinessChange {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]readinessChange(nil), w.changes...)
}

// readinessNotes describes the changes, the first sample included, by
// their time since from and, for those after it, since healed (when not
// zero).
func readinessNotes(changes []readinessChange, from, healed time.Time) []map[string]any {
	var notes []map[string]any
	for _, c := range changes {
		note := map[string]any{"ready": c.ready, "sinceFaultMs": c.at.Sub(from).Milliseconds()}
		if !healed.IsZero() && c.at.After(healed) {
			note["sinceHealMs"] = c.at.Sub(healed).Milliseconds()
		}
		notes = append(notes, note)
	}
	return notes
}

// requireReadyThrough checks that the samples said ready at from and did
// not change until to.
func requireReadyThrough(t *testing.T, changes []readinessChange, from, to time.Time) {
	t.Helper()
	readyAtFrom := false
	for _, c := range changes {
		switch {
		case !c.at.After(from):
			readyAtFrom = c.ready
		case !c.at.After(to):
			t.Errorf("readiness changed to %v %s after the partition began, before it healed", c.ready, c.at.Sub(from).Round(time.Millisecond))
		}
	}
	assert.True(t, readyAtFrom, "the executor was not ready when the partition began")
}

// generation returns the executor group's generation: 1 after the first
// join, one more at each rebalance, the group emptied by an expired session
// included.
func (b *proxiedBroker) generation(t *testing.T) int32 {
	t.Helper()
	var generation int32
	require.NoError(t, b.Inspect(func(c *kfake.Cluster) error {
		if info := c.GroupInfo(group); info != nil {
			generation = info.Epoch
		}
		return nil
	}))
	return generation
}

// proxyNotes are a proxy's counts, for Outcome.Notes.
func proxyNotes(p *testkit.Proxy) map[string]any {
	s := p.Stats()
	return map[string]any{"accepted": s.Accepted, "resets": s.Resets, "dropped": s.Dropped,
		"bytesToBroker": s.ToTarget, "bytesToExecutor": s.ToClient}
}
