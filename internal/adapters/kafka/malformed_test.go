package kafka_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// Bad input on the tasks topic. Each test writes one bad record and then a
// good task to the same partition (every topic has one partition here):
// the good task must still arrive, and the bad record must be answered
// FAILED INVALID_TASK when its run id and node id can be read, else skipped
// with a log line naming its offset; either way it is committed.

// smallMaxMessageBytes is the MaxMessageBytes of these tests, so that an
// oversized record is cheap to write.
const smallMaxMessageBytes = 1024

// answer is the identity a bad record's FAILED INVALID_TASK result must be
// addressed to.
type answer struct {
	runID, nodeID string
	attempt       int
	token         string
}

// requireBadInput writes value as a task record, then a good task, and
// checks the outcome: an answer addressed to want, or, when want is nil,
// nothing on the results topic and a logged skip.
func requireBadInput(t *testing.T, value []byte, want *answer) {
	t.Helper()
	b := kafkatest.Start(t, kafkatest.WithPartitions(1))
	group := porttest.UniqueID(t)
	cfg := brokerConfig(b, group)
	cfg.MaxMessageBytes = smallMaxMessageBytes
	logs := newLogBook(t)
	results := b.Results(t)
	source := newSource(t, cfg, logs)
	in := startSource(t, source, 4)

	require.NoError(t, b.ProduceRaw(waitContext(t), kafkatest.TasksTopic, []byte("bad"), value), "produce the bad record")
	produceTask(t, b, task("good"))
	good := waitOffered(t, in, "good")["good"]
	// One partition, read in order: the bad record was dealt with (and any
	// answer acknowledged) before the good task was offered.
	require.Len(t, in.Offers(), 1, "offers: only the good task")
	for _, r := range in.Refusals() {
		require.NotEqual(t, "good", r.Task.RunID, "the good task was refused: %v", r.Err)
	}

	if want != nil {
		require.NoError(t, results.WaitForMessagesFunc(waitContext(t), func(all []kafka.ResultMessage) bool {
			return len(all) > 0
		}))
		all := results.All()
		require.Len(t, all, 1, "results")
		got := all[0]
		assert.Equal(t, want.runID, got.RunID, "runId")
		assert.Equal(t, want.nodeID, got.NodeID, "nodeId")
		assert.Equal(t, want.attempt, got.Attempt, "attempt")
		assert.Equal(t, want.token, got.ExecutionToken, "executionToken")
		assert.Equal(t, string(domain.StatusFailed), got.Status)
		if assert.NotNil(t, got.Error) {
			assert.Equal(t, domain.CodeInvalidTask, got.Error.Code)
			assert.NotEmpty(t, got.Error.Message)
			assert.False(t, got.Error.Retryable, "an invalid task stays invalid")
		}
		assert.NotEmpty(t, logs.find("malformed task record answered FAILED INVALID_TASK"))
	} else {
		// A result written after the good task was offered bounds the
		// check that none was written for the bad record.
		sink := kafka.NewResultSink(newProducer(t, cfg), cfg)
		sentinel := domain.Result{RunID: "sentinel", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}
		require.NoError(t, sink.Deliver(waitContext(t), []domain.Result{sentinel}))
		require.NoError(t, results.WaitForMessages(waitContext(t), 1))
		all := results.All()
		require.Len(t, all, 1, "results: only the sentinel")
		require.Equal(t, "sentinel", all[0].RunID)
		skipped := logs.find("malformed task record skipped")
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

func TestBadInputTruncatedJSON(t *testing.T) {
	t.Parallel()
	requireBadInput(t, []byte(`{"runId":"r-1","nodeId":"n-1","attempt":1,"context":{"a":`), nil)
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
	// The attempt cannot be read: the answer carries attempt 0.
	requireBadInput(t, []byte(`{"runId":"r-attempt","nodeId":"n-1","attempt":"one","token":"tok-a"}`),
		&answer{runID: "r-attempt", nodeID: "n-1", attempt: 0, token: "tok-a"})
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
	// answers it (or not) itself: skipped, not answered here.
	requireBadInput(t, []byte(`{"runId":"r-other","nodeId":"n-1","attempt":"one","targetExecutor":"shipping-label-printer"}`), nil)
}
