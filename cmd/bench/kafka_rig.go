package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
)

// kafkaPartitions is the partition count of every topic of the harness's
// clusters: more than one, so that the executor's consumer reads several
// partitions at once, as in production.
const kafkaPartitions = 4

// kafkaRig is the engine's side of Kafka runs: a kfake cluster of its own
// on 127.0.0.1 (topics created explicitly), a franz-go producer writing
// tasks as the Gamelan engine does (acks=all, no linger, snappy), and a
// franz-go reader of the results topic. One rig serves one system under
// test, so that the executor and its raw baseline never see each other's
// records. Tasks are sent in rounds; a round's results are told apart by
// the round's tag in their node ids.
type kafkaRig struct {
	broker   *kafkaengine.Broker
	producer *kafkaengine.Producer
	results  *kgo.Client
	stop     context.CancelFunc
	reading  sync.WaitGroup

	mu     sync.Mutex
	round  *kafkaRound
	rounds int
	// readErr is the first failure of a produce or of the results reader.
	readErr error
}

// kafkaRound is one batch of tasks: its node ids are "<tag>-<index>".
type kafkaRound struct {
	tag    string
	values [][]byte // the task records, encoded before the round starts
	rec    *recorder
	// seen tracks first results for correctness, apart from rec (whose
	// entries may be filled in by censor before the real answer comes).
	seen      []atomic.Bool
	seenCount atomic.Int64
	allSeen   chan struct{}
	dups      atomic.Int64
	failed    atomic.Int64 // results whose status is not COMPLETED
	bytes     atomic.Int64 // summed sizes of first results
}

// newKafkaRig starts a cluster and the engine's clients, and returns once
// the results reader has read a record of its own (so that neither its
// connection nor its first fetch is charged to the first task measured).
func newKafkaRig(ctx context.Context) (*kafkaRig, error) {
	broker, err := kafkaengine.StartBroker(kafkaengine.BrokerConfig{
		Host: "127.0.0.1", Brokers: 1, Partitions: kafkaPartitions, Topics: append(kafkaengine.DefaultTopics(), kafkaengine.DeadLetterTopic),
	})
	if err != nil {
		return nil, err
	}
	rig := &kafkaRig{broker: broker}
	if rig.producer, err = kafkaengine.NewProducer(broker.ClientOptions()); err != nil {
		broker.Close()
		return nil, err
	}
	rig.results, err = kgo.NewClient(append(broker.ClientOptions(),
		kgo.ConsumeTopics(kafkaengine.ResultsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// kfake answers a waiting fetch as soon as a record arrives, so the
		// wait only bounds an idle reader's polling.
		kgo.FetchMaxWait(100*time.Millisecond),
	)...)
	if err != nil {
		rig.producer.Close()
		broker.Close()
		return nil, err
	}
	readCtx, stop := context.WithCancel(context.Background())
	rig.stop = stop
	rig.reading.Go(func() { rig.read(readCtx) })
	if err := rig.warmReader(ctx); err != nil {
		rig.close()
		return nil, err
	}
	return rig, nil
}

// addrs returns the bootstrap servers, comma-separated.
func (k *kafkaRig) addrs() string { return strings.Join(k.broker.Addrs(), ",") }

// close stops the clients and the cluster.
func (k *kafkaRig) close() {
	k.stop()
	k.results.Close()
	k.reading.Wait()
	k.producer.Close()
	k.broker.Close()
}

// warmReader writes a result of a round of one task and waits for the
// reader to see it.
func (k *kafkaRig) warmReader(ctx context.Context) error {
	round := k.newRound(1, 0)
	value, err := json.Marshal(kafka.ResultMessage{RunID: "warm", NodeID: round.nodeID(0), Attempt: 1, Status: "COMPLETED"})
	if err != nil {
		return err
	}
	if err := k.producer.Produce(ctx, kafkaengine.ResultsTopic, "warm", value, nil); err != nil {
		return err
	}
	return k.await(ctx, round, 10*time.Second)
}

// newRound prepares the next round of n tasks at rate (0: closed loop)
// and makes it current: results of earlier rounds are ignored from now on.
func (k *kafkaRig) newRound(n int, rate float64) *kafkaRound {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.rounds++
	r := &kafkaRound{tag: "r" + strconv.Itoa(k.rounds), rec: newRecorder(n, rate),
		seen: make([]atomic.Bool, n), allSeen: make(chan struct{}), values: make([][]byte, n)}
	for i := range n {
		r.values[i] = kafkaTaskValue(r.nodeID(i), i)
	}
	k.round = r
	return r
}

// nodeID names task i of the round; every round's ids have the same length
// up to the round number, so that both sides of a comparison carry records
// of one size.
func (r *kafkaRound) nodeID(i int) string { return fmt.Sprintf("%s-%08d", r.tag, i) }

// kafkaRunID spreads tasks over 16 runs, and so over the partitions (the
// run id is the record key).
func kafkaRunID(i int) string { return "bench-run-" + strconv.Itoa(i%16) }

// kafkaTaskValue is a calculate-tax task as the Gamelan engine writes it,
// addressed by type so that any service name serves it.
func kafkaTaskValue(nodeID string, i int) []byte {
	value, err := json.Marshal(kafka.TaskMessage{
		RunID: kafkaRunID(i), NodeID: nodeID, Attempt: 1, Token: "exec-token-" + strconv.Itoa(i),
		Context:        map[string]any{"amount": 125.5, "currency": "EUR", "customerId": "cust-42"},
		TargetExecutor: "calculate-tax",
	})
	if err != nil {
		panic(err) // a TaskMessage of strings and numbers always encodes
	}
	return value
}

// send produces task i of round without waiting for its acknowledgement;
// a failure is kept for err.
func (k *kafkaRig) send(ctx context.Context, round *kafkaRound, i int) {
	rec := &kgo.Record{Topic: kafkaengine.TasksTopic, Key: []byte(kafkaRunID(i)), Value: round.values[i]}
	k.producer.ProduceAsync(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil && ctx.Err() == nil {
			k.fail(fmt.Errorf("produce task %d: %w", i, err))
		}
	})
}

func (k *kafkaRig) fail(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.readErr == nil {
		k.readErr = err
	}
}

func (k *kafkaRig) err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.readErr
}

// read hands every result to the current round until ctx ends.
func (k *kafkaRig) read(ctx context.Context) {
	for {
		fetches := k.results.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			k.fail(fmt.Errorf("read %s/%d: %w", topic, partition, err))
		})
		k.mu.Lock()
		round := k.round
		k.mu.Unlock()
		if round == nil {
			continue // nothing was sent yet, so nothing can be a result
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			if err := round.take(rec.Value); err != nil {
				k.fail(err)
			}
		})
	}
}

// take records one result of the round; results of other rounds are
// ignored.
func (r *kafkaRound) take(value []byte) error {
	var res struct {
		NodeID string `json:"nodeId"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(value, &res); err != nil {
		return fmt.Errorf("result %.200q: %w", value, err)
	}
	tag, index, ok := strings.Cut(res.NodeID, "-")
	if !ok || tag != r.tag {
		return nil // an earlier round's late result
	}
	i, err := strconv.Atoi(index)
	if err != nil || i < 0 || i >= len(r.seen) {
		return fmt.Errorf("result of unknown node %q", res.NodeID)
	}
	r.rec.answer(i)
	if r.seen[i].Swap(true) {
		r.dups.Add(1)
		return nil
	}
	if res.Status != "COMPLETED" {
		r.failed.Add(1)
	}
	r.bytes.Add(int64(len(value)))
	if int(r.seenCount.Add(1)) == len(r.seen) {
		close(r.allSeen)
	}
	return nil
}

// errLagging is returned by await when results still lag behind at the
// deadline but none is lost.
var errLagging = errors.New("results lagged behind the schedule")

// await waits until every task of round has a result. If lag passes first,
// the unanswered tasks' latencies are censored (counted up to now, a lower
// bound) and await waits up to a minute more for them, so that a system
// that cannot keep the rate is told from one that loses tasks: it then
// returns errLagging, or an error naming the tasks lost.
func (k *kafkaRig) await(ctx context.Context, round *kafkaRound, lag time.Duration) error {
	waitFor := func(d time.Duration) error {
		timer := time.NewTimer(d)
		defer timer.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-round.allSeen:
				return nil
			case <-timer.C:
				return context.DeadlineExceeded
			case <-tick.C:
				if err := k.err(); err != nil {
					return err
				}
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
	err := waitFor(lag)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		return errors.Join(err, k.err())
	}
	round.rec.censor(time.Now())
	if err := waitFor(time.Minute); err != nil {
		return fmt.Errorf("%d of %d tasks never answered: %w", len(round.seen)-int(round.seenCount.Load()), len(round.seen), err)
	}
	return errLagging
}

// check reports a round whose results were not all COMPLETED.
func (r *kafkaRound) check() error {
	if n := r.failed.Load(); n > 0 {
		return fmt.Errorf("round %s: %d of %d results not COMPLETED", r.tag, n, len(r.seen))
	}
	return nil
}

// resultSize is the mean size of the round's results, in bytes.
func (r *kafkaRound) resultSize() float64 {
	if n := r.seenCount.Load(); n > 0 {
		return float64(r.bytes.Load()) / float64(n)
	}
	return 0
}
