package kafka_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Bad input on the tasks topic. Each test writes one bad record and then a
// good task to the same partition (every topic has one partition here):
// the good task must still arrive. A bad record that a result can name (a
// valid run id, node id and attempt) is offered as invalid, for the runtime
// to answer FAILED INVALID_TASK (test/component checks the answer on the
// results topic); any other is refused by the runtime and skipped with a
// log line naming its offset. Either way it is committed.

// smallMaxMessageBytes is the MaxMessageBytes of these tests, so that an
// oversized record is cheap to write.
const smallMaxMessageBytes = 1024

// answer is the identity a bad record is offered with, to be answered.
type answer struct {
	runID, nodeID string
	attempt       int
	token         string
}

// requireBadInput writes value as a task record, then a good task, and
// checks the outcome: an invalid offer addressed to want, or, when want is
// nil, a refusal and a logged skip.
func requireBadInput(t *testing.T, value []byte, want *answer) {
	t.Helper()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	cfg.MaxMessageBytes = smallMaxMessageBytes
	logs := newLogBook(t)
	source := newSource(t, cfg, logs)
	in := startSource(t, source, 4)

	require.NoError(t, b.ProduceRaw(waitContext(t), kafkatest.TasksTopic, []byte("bad"), value), "produce the bad record")
	produceTask(t, b, task("good"))
	good := waitOffered(t, in, "good")["good"]
	for _, r := range in.Refusals() {
		require.NotEqual(t, "good", r.Task.RunID, "the good task was refused: %v", r.Err)
	}
	require.NoError(t, good.Invalid)

	if want != nil {
		// One partition, read in order: the bad record came first.
		offers := in.Offers()
		require.Len(t, offers, 2, "offers: the bad record, to be answered, and the good task")
		bad := offers[0]
		assert.Equal(t, want.runID, bad.Task.RunID, "runId")
		assert.Equal(t, want.nodeID, bad.Task.NodeID, "nodeId")
		assert.Equal(t, want.attempt, bad.Task.Attempt, "attempt")
		assert.Equal(t, want.token, bad.Task.ExecutionToken, "executionToken")
		require.ErrorIs(t, bad.Invalid, domain.ErrInvalidTask, "offered as invalid, to be answered FAILED INVALID_TASK")
		assert.True(t, bad.Redeliverable)
		assert.False(t, bad.Refusable, "a record is answered, not refused")
		bad.Settle(nil) // as the runtime does once the answer is acknowledged
		assert.Empty(t, logs.find("task record skipped"))
	} else {
		require.Len(t, in.Offers(), 1, "offers: only the good task")
		require.Len(t, in.Refusals(), 1, "the bad record was offered once and refused")
		require.ErrorIs(t, in.Refusals()[0].Err, domain.ErrInvalidTask)
		skipped := logs.find("task record skipped")
		if assert.Len(t, skipped, 1, "log lines of the skip") {
			assert.Equal(t, "0", skipped[0].Attrs["offset"], "the skipped record's offset")
			assert.Equal(t, "0", skipped[0].Attrs["partition"])
		}
	}

	good.Settle(nil)
	waitLag(t, b, group, 0)
}

func TestBadInputNotJSON(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`this is not JSON {"runId":"r-1","nodeId":"n-1"}`), nil)
}

// A record truncated after its identity is answered by it (the fields
// before the fault are read one by one); one truncated before is skipped.
func TestBadInputTruncatedJSON(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-1","nodeId":"n-1","attempt":1,"context":{"a":`), &answer{runID: "r-1", nodeID: "n-1", attempt: 1})
}

func TestBadInputTruncatedBeforeTheIdentity(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-1","nodeId":"n-`), nil)
}

func TestBadInputArray(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`[{"runId":"r-1","nodeId":"n-1","attempt":1}]`), nil)
}

func TestBadInputJSONString(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`"runId"`), nil)
}

func TestBadInputTombstone(t *testing.T) {
	t.Parallel()
	requireBadInput(t, nil, nil)
}

func TestBadInputMissingRunID(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"nodeId":"n-1","attempt":1,"token":"tok"}`), nil)
}

func TestBadInputMissingNodeID(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-1","attempt":1,"token":"tok"}`), nil)
}

func TestBadInputEmptyIDs(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"","nodeId":"","attempt":1}`), nil)
}

func TestBadInputRunIDNotAString(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":42,"nodeId":"n-1","attempt":1}`), nil)
}

func TestBadInputAttemptNotANumber(t *testing.T) {
	t.Parallel()
	// The attempt cannot be read: no result could name the task, since a
	// guessed attempt would address another one.
	requireBadInput(t, []byte(`{"runId":"r-attempt","nodeId":"n-1","attempt":"one","token":"tok-a"}`), nil)
}

func TestBadInputAttemptMissing(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-attempt","nodeId":"n-1","token":"tok-a"}`), nil)
}

func TestBadInputAttemptNotWhole(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-attempt","nodeId":"n-1","attempt":1.5,"token":"tok-a"}`), nil)
}

func TestBadInputAttemptBeyond32Bits(t *testing.T) {
	t.Parallel()
	// The engine's attempt is a 32-bit int: 2147483648 is none it sent.
	requireBadInput(t, []byte(`{"runId":"r-attempt","nodeId":"n-1","attempt":2147483648,"token":"tok-a"}`), nil)
}

func TestBadInputAttemptZero(t *testing.T) {
	t.Parallel()
	// Attempts count from 1, but a result can name this one as it came.
	requireBadInput(t, []byte(`{"runId":"r-zero","nodeId":"n-1","attempt":0,"token":"tok-z"}`),
		&answer{runID: "r-zero", nodeID: "n-1", attempt: 0, token: "tok-z"})
}

func TestBadInputRunIDAgainstTheRule(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r 1/x","nodeId":"n-1","attempt":1}`), nil)
}

func TestBadInputHugeRunID(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"`+strings.Repeat("r", 600)+`","nodeId":"n-1","attempt":1}`), nil)
}

func TestBadInputIdempotencyKeyOfAnotherRun(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-key","nodeId":"n-1","attempt":1,"token":"tok-k","idempotencyKey":"shared:n-1:1"}`),
		&answer{runID: "r-key", nodeID: "n-1", attempt: 1, token: "tok-k"})
}

func TestBadInputContextNotAnObject(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-context","nodeId":"n-1","attempt":2,"token":"tok-c","context":"a string"}`),
		&answer{runID: "r-context", nodeID: "n-1", attempt: 2, token: "tok-c"})
}

func TestBadInputTimeoutNotANumber(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-timeout","nodeId":"n-1","attempt":1,"timeoutSeconds":"soon"}`),
		&answer{runID: "r-timeout", nodeID: "n-1", attempt: 1})
}

func TestBadInputNegativeTimeout(t *testing.T) {
	t.Parallel()
	// Decodes, but the runtime refuses the task (Task.Validate): the
	// refusal is answered as well.
	requireBadInput(t, []byte(`{"runId":"r-negative","nodeId":"n-1","attempt":1,"token":"tok-n","timeoutSeconds":-5}`),
		&answer{runID: "r-negative", nodeID: "n-1", attempt: 1, token: "tok-n"})
}

func TestBadInputOversized(t *testing.T) {
	t.Parallel()
	value := `{"runId":"r-big","nodeId":"n-1","attempt":4,"token":"tok-b","context":{"blob":"` +
		strings.Repeat("x", 2*smallMaxMessageBytes) + `"}}`
	requireBadInput(t, []byte(value), &answer{runID: "r-big", nodeID: "n-1", attempt: 4, token: "tok-b"})
}

func TestBadInputFarOversized(t *testing.T) {
	t.Parallel()
	// Larger than a whole fetch of the consumer (4 x MaxMessageBytes).
	value := `{"runId":"r-huge","nodeId":"n-1","attempt":1,"token":"tok-h","context":{"blob":"` +
		strings.Repeat("x", 64*smallMaxMessageBytes) + `"}}`
	requireBadInput(t, []byte(value), &answer{runID: "r-huge", nodeID: "n-1", attempt: 1, token: "tok-h"})
}

func TestBadInputInvalidUTF8(t *testing.T) {
	t.Parallel()
	value := []byte(`{"runId":"r-utf8","nodeId":"n-1","attempt":1,"token":"tok-u","context":{"name":"Zo` + "\xff\xfe" + `"}}`)
	requireBadInput(t, value, &answer{runID: "r-utf8", nodeID: "n-1", attempt: 1, token: "tok-u"})
}

func TestBadInputForAnotherExecutor(t *testing.T) {
	t.Parallel()
	// Malformed, but addressed to an executor of another service, which
	// answers it (or not) itself: skipped and committed, never offered.
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	logs := newLogBook(t)
	in := startSource(t, newSource(t, brokerConfig(b, group), logs), 4)
	require.NoError(t, b.ProduceRaw(waitContext(t), kafkatest.TasksTopic, []byte("bad"),
		[]byte(`{"runId":"r-other","nodeId":"n-1","attempt":"one","targetExecutor":"shipping-label-printer"}`)))
	produceTask(t, b, task("good"))
	good := waitOffered(t, in, "good")["good"]
	assert.Equal(t, 0, len(in.Refusals())+len(in.Offers())-1, "the other executor's record reached the runtime")
	assert.Len(t, logs.find("task for another executor skipped"), 1)
	good.Settle(nil)
	waitLag(t, b, group, 0)
}
