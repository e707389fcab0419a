package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// recordFuzzMaxBytes is the record size limit of FuzzTaskRecord: small, so
// that the fuzzer reaches it.
const recordFuzzMaxBytes = 4 << 10

// recordHarness is one broker, one TaskSource reading its one partition, and
// the Intake the source offers to, shared by every input of a fuzzing
// process.
type recordHarness struct {
	broker *kafkatest.Broker
	group  string
	in     *porttest.Intake
	seq    atomic.Int64
}

// recordOutcome is what became of one fuzzed record, as the source's
// Intake saw it.
type recordOutcome struct {
	kind    string // "offered", "refused" or "skipped"
	task    domain.Task
	invalid string // why an offered task is invalid, or why it was refused
}

// FuzzTaskRecord writes arbitrary task records, value and headers, to a real
// (kfake) broker read by a TaskSource, through the whole path: decoding, the
// target filter, the offer, the commit. Each record is followed by a good
// sentinel task on the same partition. Whatever the record:
//   - the partition goes on: the sentinel is offered after it;
//   - the record is offered (a valid task, or an addressable invalid one to
//     be answered FAILED INVALID_TASK), refused as invalid and not
//     addressable (then skipped), or skipped for another executor; nothing
//     else;
//   - everything read is committed once settled;
//   - headers change nothing: the same value without headers has the same
//     outcome (docs/protocol.md 4.3: headers of task records are not read).
//
// It is slow for a fuzz target (two records through a broker per input),
// so its value is in the seed corpus, replayed by every go test run, and
// in the fuzzer's search for a record that stalls the partition.
func FuzzTaskRecord(f *testing.F) {
	f.Add([]byte(`{"runId":"r-1","nodeId":"n-1","attempt":1}`), "authorization", []byte("Bearer x"), "", []byte(nil))
	b := kafkatest.Start(f, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(f)
	cfg := kafka.Config{Brokers: b.Addrs(), GroupID: group, MaxMessageBytes: recordFuzzMaxBytes}
	source, err := kafka.NewTaskSource(cfg, []domain.Registration{taxRegistration()}, (&logBook{}).logger())
	if err != nil {
		f.Fatal(err)
	}
	in := porttest.NewIntake(16)
	if err := source.Start(context.Background(), in); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		_ = source.Stop(context.Background())
		in.SettleAll(nil)
		_ = source.Close(context.Background())
	})
	h := &recordHarness{broker: b, group: group, in: in}

	f.Fuzz(func(t *testing.T, value []byte, key1 string, value1 []byte, key2 string, value2 []byte) {
		var headers []kafkatest.Header
		if key1 != "" || value1 != nil {
			headers = append(headers, kafkatest.Header{Key: key1, Value: value1})
		}
		if key2 != "" || value2 != nil {
			headers = append(headers, kafkatest.Header{Key: key2, Value: value2})
		}
		withHeaders := h.outcome(t, value, headers)
		t.Logf("%s %q", withHeaders.kind, domain.Clip(withHeaders.invalid, 120))
		checkRecordOutcome(t, value, withHeaders)
		if len(headers) > 0 {
			without := h.outcome(t, value, nil)
			if !sameOutcome(withHeaders, without) {
				t.Fatalf("headers changed the outcome of a record:\nwith:    %+v\nwithout: %+v", withHeaders, without)
			}
		}
	})
}

// outcome writes one record and a sentinel task after it, waits for the
// sentinel to be offered, and returns what became of the record; it then
// settles everything offered and waits until the group has committed all
// it read.
func (h *recordHarness) outcome(t *testing.T, value []byte, headers []kafkatest.Header) recordOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	offersBefore, refusalsBefore := len(h.in.Offers()), len(h.in.Refusals())
	sentinel := fmt.Sprintf("fuzz-sentinel-%d", h.seq.Add(1))
	if err := h.broker.ProduceRaw(ctx, kafkatest.TasksTopic, nil, value, headers...); err != nil {
		t.Fatalf("produce the record: %v", err)
	}
	if err := h.broker.ProduceTask(ctx, task(sentinel)); err != nil {
		t.Fatalf("produce the sentinel: %v", err)
	}
	isSentinel := func(task domain.Task) bool { return task.RunID == sentinel && task.ExecutionToken == "token-"+sentinel }
	err := h.in.WaitUntil(ctx, func() bool {
		for _, o := range h.in.Offers()[offersBefore:] {
			if isSentinel(o.Task) {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("the sentinel after the record was never offered (the partition stalled): %v; %s", err, h.in)
	}
	var out []recordOutcome
	for _, o := range h.in.Offers()[offersBefore:] {
		if isSentinel(o.Task) {
			continue
		}
		oc := recordOutcome{kind: "offered", task: o.Task}
		if o.Invalid != nil {
			oc.invalid = o.Invalid.Error()
		}
		if !o.Redeliverable || o.Refusable {
			t.Fatalf("a record offered as redeliverable %v, refusable %v", o.Redeliverable, o.Refusable)
		}
		out = append(out, oc)
	}
	for _, r := range h.in.Refusals()[refusalsBefore:] {
		if !errors.Is(r.Err, domain.ErrInvalidTask) {
			t.Fatalf("a record refused for another reason than being invalid: %v", r.Err)
		}
		out = append(out, recordOutcome{kind: "refused", task: r.Task, invalid: r.Err.Error()})
	}
	h.in.SettleAll(nil)
	if err := h.broker.WaitForLag(ctx, h.group, kafkatest.TasksTopic, 0); err != nil {
		t.Fatalf("the record and the sentinel were not both committed once settled: %v", err)
	}
	switch len(out) {
	case 0:
		return recordOutcome{kind: "skipped"}
	case 1:
		return out[0]
	}
	t.Fatalf("one record became %d deliveries: %+v", len(out), out)
	return recordOutcome{}
}

// checkRecordOutcome checks an outcome against the rules of section 4.3.
func checkRecordOutcome(t *testing.T, value []byte, oc recordOutcome) {
	t.Helper()
	task := oc.task
	switch oc.kind {
	case "offered":
		if oc.invalid == "" {
			if err := task.Validate(); err != nil {
				t.Fatalf("offered as valid, but %v", err)
			}
		} else if !task.Addressable() {
			t.Fatalf("an invalid task offered though no result can name it: %+v", task)
		}
		if task.ExecutorID != "" && task.ExecutorID != taxExecutorID {
			t.Fatalf("offered with target %q, which is not this service's executor", task.ExecutorID)
		}
	case "refused":
		// A record is never refused for what a result could answer.
		if task.Addressable() {
			t.Fatalf("an addressable task refused rather than answered (%s): %+v", oc.invalid, task)
		}
		if len(oc.invalid) > 1024 {
			t.Fatalf("a refusal of %d bytes, logged as it is: %.200q", len(oc.invalid), oc.invalid)
		}
	case "skipped":
		// Only a record naming another executor is skipped without an
		// offer.
		if !strings.Contains(strings.ToLower(string(value)), "target") && !strings.Contains(string(value), `\u`) {
			t.Fatalf("a record skipped though it names no target: %q", domain.Clip(string(value), 200))
		}
	}
}

// sameOutcome compares two outcomes; contexts compare as JSON would
// (an empty context like none).
func sameOutcome(a, b recordOutcome) bool {
	if len(a.task.Context) == 0 && len(b.task.Context) == 0 {
		a.task.Context, b.task.Context = nil, nil
	}
	if !a.task.ScheduledAt.Equal(b.task.ScheduledAt) {
		return false
	}
	a.task.ScheduledAt, b.task.ScheduledAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}
