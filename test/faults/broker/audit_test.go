package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// auditWait bounds how long the check of one commit may wait for the
// test's readers to catch up with it; a commit that could not be checked in
// time is counted as unverified rather than failed.
const auditWait = 20 * time.Second

// position is where a record sits.
type position struct {
	partition int32
	offset    int64
}

// commitAudit checks every offset commit the executor's group sends for
// the tasks topic, as the broker receives it: each task record below a
// committed offset must already have its result on the results topic. That
// is the Kafka source's rule (an offset is marked only once its task's
// result is acknowledged), seen from outside: a commit that ran ahead of its
// results would lose those tasks at the next restart or rebalance.
//
// It hooks kfake's request control: at each OffsetCommit it reads the end
// of every results partition from the broker's own state (exactly what had
// been written when the commit arrived) and lets the commit through at once;
// in the background it then waits until the test's readers have read the
// tasks below the committed offsets and the results up to those ends, and
// compares. Records written after the commit are never looked at, so the
// verdict is the one at the commit's arrival however late it is reached,
// and the executor's requests (its heartbeats share the commit's
// connection) are not delayed.
type commitAudit struct {
	ctx     context.Context
	tasks   *kafkatest.Reader
	results *kafkatest.Reader

	pending sync.WaitGroup // checks in progress; added to under mu while !closed

	mu          sync.Mutex
	closed      bool                       // no more commits are checked
	taskKeys    map[int32]map[int64]string // tasks partition -> offset -> task key
	tasksTo     map[int32]int64            // tasks partition -> offset after the last one indexed
	tasksSeen   int                        // tasks records indexed
	firstResult map[string]position        // result key -> its first record
	resultsTo   map[int32]int64            // results partition -> offset after the last one indexed
	resultsSeen int                        // results records indexed
	verifiedTo  map[int32]int64            // tasks partition -> records below it all checked answered
	commits     int                        // commits checked
	highest     map[int32]int64            // highest offset checked, by tasks partition
	unverified  int                        // commits the readers did not catch up with in time
	violations  map[string]string          // task key -> what was wrong, the first time
}

// newCommitAudit reads the tasks and results topics of b for the life of t
// and audits the commits of every cluster it is installed on.
func newCommitAudit(t *testing.T, b *kafkatest.Broker) *commitAudit {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &commitAudit{
		ctx: ctx, tasks: b.NewReader(t, kafkatest.TasksTopic), results: b.NewReader(t, kafkatest.ResultsTopic),
		taskKeys: make(map[int32]map[int64]string), tasksTo: make(map[int32]int64),
		firstResult: make(map[string]position), resultsTo: make(map[int32]int64),
		verifiedTo: make(map[int32]int64), highest: make(map[int32]int64), violations: make(map[string]string),
	}
}

// install hooks the audit into c; a restarted broker is a new cluster and
// needs it again. Commits that reach a cluster before install are not
// audited.
func (a *commitAudit) install(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		commit, ok := req.(*kmsg.OffsetCommitRequest)
		if !ok || commit.Group != group {
			return nil, nil, false
		}
		offsets := make(map[int32]int64)
		for _, topic := range commit.Topics {
			if topic.Topic != kafkatest.TasksTopic {
				continue
			}
			for _, p := range topic.Partitions {
				offsets[p.Partition] = p.Offset
			}
		}
		if len(offsets) == 0 {
			return nil, nil, false
		}
		// The cluster answers admin calls while a control function runs.
		ends := make(map[int32]int64)
		for _, p := range c.PartitionInfos(kafkatest.ResultsTopic) {
			ends[p.Partition] = p.HighWatermark
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.closed {
			a.pending.Go(func() { a.check(offsets, ends) })
		}
		return nil, nil, false // not handled: the broker applies the commit
	})
}

// check waits for the readers and checks one commit: offsets by tasks
// partition, against the results topic's ends when it arrived.
func (a *commitAudit) check(offsets, ends map[int32]int64) {
	ctx, cancel := context.WithTimeout(a.ctx, auditWait)
	defer cancel()
	err := a.tasks.WaitUntil(ctx, func(records []kafkatest.Record) bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.indexTasks(records)
		return reached(a.tasksTo, offsets)
	})
	if err == nil {
		err = a.results.WaitUntil(ctx, func(records []kafkatest.Record) bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.indexResults(records)
			return reached(a.resultsTo, ends)
		})
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.unverified++
		return
	}
	a.commits++
	for partition, committed := range offsets {
		a.highest[partition] = max(a.highest[partition], committed)
		answered := true
		for offset := a.verifiedTo[partition]; offset < committed; offset++ {
			key := a.taskKeys[partition][offset]
			res, ok := a.firstResult[key]
			if ok && res.offset < ends[res.partition] {
				continue
			}
			answered = false
			if _, seen := a.violations[key]; !seen {
				a.violations[key] = fmt.Sprintf("tasks record %d@%d (%s) committed (offset %d) before its result was written", partition, offset, key, committed)
			}
		}
		if answered {
			a.verifiedTo[partition] = max(a.verifiedTo[partition], committed)
		}
	}
}

// reached reports whether every partition's indexed records reach want.
func reached(to, want map[int32]int64) bool {
	for partition, offset := range want {
		if to[partition] < offset {
			return false
		}
	}
	return true
}

// indexTasks indexes the task records not indexed yet. Callers hold mu.
func (a *commitAudit) indexTasks(records []kafkatest.Record) {
	for _, r := range records[min(a.tasksSeen, len(records)):] {
		var msg kafka.TaskMessage
		key := fmt.Sprintf("undecodable %d@%d", r.Partition, r.Offset)
		if json.Unmarshal(r.Value, &msg) == nil {
			key = kafkatest.TaskKey(msg)
		}
		if a.taskKeys[r.Partition] == nil {
			a.taskKeys[r.Partition] = make(map[int64]string)
		}
		a.taskKeys[r.Partition][r.Offset] = key
		a.tasksTo[r.Partition] = max(a.tasksTo[r.Partition], r.Offset+1)
	}
	a.tasksSeen = max(a.tasksSeen, len(records))
}

// indexResults indexes the result records not indexed yet. Callers hold mu.
func (a *commitAudit) indexResults(records []kafkatest.Record) {
	for _, r := range records[min(a.resultsSeen, len(records)):] {
		var msg kafka.ResultMessage
		if json.Unmarshal(r.Value, &msg) == nil {
			key := kafkatest.ResultKey(msg)
			if first, ok := a.firstResult[key]; !ok || (first.partition == r.Partition && r.Offset < first.offset) {
				a.firstResult[key] = position{r.Partition, r.Offset}
			}
		}
		a.resultsTo[r.Partition] = max(a.resultsTo[r.Partition], r.Offset+1)
	}
	a.resultsSeen = max(a.resultsSeen, len(records))
}

// auditFigures is what the audit saw.
type auditFigures struct {
	Commits    int             // commits checked
	Unverified int             // commits not checked in time
	Highest    map[int32]int64 // highest committed offset checked, by partition
	Violations []string        // tasks committed before their result, one line each
}

// finish stops checking commits, waits for the checks in progress, and
// returns what the audit saw.
func (a *commitAudit) finish() auditFigures {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.pending.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := auditFigures{Commits: a.commits, Unverified: a.unverified, Highest: make(map[int32]int64)}
	for p, o := range a.highest {
		f.Highest[p] = o
	}
	for _, v := range a.violations {
		f.Violations = append(f.Violations, v)
	}
	return f
}

// require finishes the audit and fails t unless it checked at least one commit and found
// nothing committed ahead of its result.
func (a *commitAudit) require(t *testing.T) auditFigures {
	t.Helper()
	f := a.finish()
	if f.Commits == 0 {
		t.Errorf("commit audit: no commit of group %s on %s was checked (%d unverified)", group, kafkatest.TasksTopic, f.Unverified)
	}
	if len(f.Violations) > 0 {
		shown := f.Violations[:min(len(f.Violations), 10)]
		t.Errorf("commit audit: %d tasks committed before their result was written: %v", len(f.Violations), shown)
	}
	return f
}
