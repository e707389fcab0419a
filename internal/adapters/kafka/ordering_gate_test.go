package kafka

import (
	"encoding/json"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gateRecord returns a record at offset with a record key (if key is not
// empty) and a task of run runID (if not empty) as its value.
func gateRecord(t *testing.T, offset int64, key, runID string) *sarama.ConsumerMessage {
	t.Helper()
	msg := &sarama.ConsumerMessage{Offset: offset, Value: []byte("not json")}
	if key != "" {
		msg.Key = []byte(key)
	}
	if runID != "" {
		value, err := json.Marshal(TaskMessage{RunID: runID, NodeID: "n", Attempt: 1})
		require.NoError(t, err)
		msg.Value = value
	}
	return msg
}

// readyOffsets takes the gate's ready records and returns their offsets,
// checking that readied signalled them.
func readyOffsets(t *testing.T, g *orderGate) []int64 {
	t.Helper()
	var offsets []int64
	select {
	case <-g.readied():
	default:
		return nil
	}
	for _, msg := range g.takeReady() {
		offsets = append(offsets, msg.Offset)
	}
	return offsets
}

func TestOrderGateKeyOrder(t *testing.T) {
	g := newOrderGate(KeyOrder)
	require.True(t, g.admit(gateRecord(t, 0, "a", "")), "the first record of a key passes")
	require.False(t, g.admit(gateRecord(t, 1, "a", "")), "the second waits")
	require.True(t, g.admit(gateRecord(t, 2, "b", "")), "another key passes")
	require.False(t, g.admit(gateRecord(t, 3, "", "a")), "no record key: the run id orders it, behind record 1")
	require.True(t, g.admit(gateRecord(t, 4, "", "")), "neither key nor run id: no predecessor")
	require.True(t, g.admit(gateRecord(t, 5, "", "c")))
	assert.Nil(t, readyOffsets(t, g))

	g.release(4) // an offset the gate did not hold: nothing happens
	g.release(2)
	assert.Nil(t, readyOffsets(t, g), "b had nothing waiting")
	require.True(t, g.admit(gateRecord(t, 6, "b", "")), "b is idle again")
	g.release(0)
	assert.Equal(t, []int64{1}, readyOffsets(t, g))
	g.release(1)
	assert.Equal(t, []int64{3}, readyOffsets(t, g))
	g.release(3)
	assert.Nil(t, readyOffsets(t, g))
	assert.Empty(t, g.queues["a"], "a is idle")
}

func TestOrderGatePartitionOrder(t *testing.T) {
	g := newOrderGate(PartitionOrder)
	require.True(t, g.admit(gateRecord(t, 10, "a", "")))
	require.False(t, g.admit(gateRecord(t, 11, "b", "")), "one record of the partition at a time, whatever its key")
	require.False(t, g.admit(gateRecord(t, 12, "", "")), "even undecodable")
	g.release(10)
	assert.Equal(t, []int64{11}, readyOffsets(t, g))
	g.release(11)
	assert.Equal(t, []int64{12}, readyOffsets(t, g))
}

// TestOrderGateBound: the gate reports full once maxWaiting records wait,
// and not full again once one is released.
func TestOrderGateBound(t *testing.T) {
	g := newOrderGate(PartitionOrder)
	require.True(t, g.admit(gateRecord(t, 0, "", "")))
	for offset := int64(1); offset <= maxWaiting; offset++ {
		require.False(t, g.full(), "full at %d waiting", offset-1)
		require.False(t, g.admit(gateRecord(t, offset, "", "")))
	}
	assert.True(t, g.full())
	g.release(0)
	assert.False(t, g.full(), "a released record makes room")
	assert.Equal(t, []int64{1}, readyOffsets(t, g))
}

func TestOrderGateUnordered(t *testing.T) {
	for _, mode := range []Ordering{"", Unordered} {
		g := newOrderGate(mode)
		assert.Nil(t, g, "unordered has no gate")
		assert.True(t, g.admit(gateRecord(t, 0, "a", "")))
		assert.True(t, g.admit(gateRecord(t, 1, "a", "")))
		assert.False(t, g.full())
		assert.Nil(t, g.readied())
		g.release(0)
	}
}

func TestOrderingValidate(t *testing.T) {
	for _, mode := range []Ordering{"", Unordered, KeyOrder, PartitionOrder} {
		assert.NoError(t, Config{Brokers: []string{"127.0.0.1:9092"}, Ordering: mode}.Validate(), mode)
	}
	err := Config{Brokers: []string{"127.0.0.1:9092"}, Ordering: "offset"}.Validate()
	assert.ErrorContains(t, err, `ordering "offset": must be unordered, key or partition`)
}

// fakeClaim is a claim whose records come from a channel.
type fakeClaim struct {
	sarama.ConsumerGroupClaim
	messages chan *sarama.ConsumerMessage
}

func (c fakeClaim) Messages() <-chan *sarama.ConsumerMessage { return c.messages }

// TestReadableStopsWhenFull: a claim whose gate is full is not read (a nil
// channel: the claim's select waits for a release, without spinning).
func TestReadableStopsWhenFull(t *testing.T) {
	claim := fakeClaim{messages: make(chan *sarama.ConsumerMessage)}
	assert.NotNil(t, readable(claim, nil), "unordered: always read")
	g := newOrderGate(KeyOrder)
	assert.NotNil(t, readable(claim, g))
	require.True(t, g.admit(gateRecord(t, 0, "a", "")))
	for offset := int64(1); offset <= maxWaiting; offset++ {
		require.False(t, g.admit(gateRecord(t, offset, "a", "")))
	}
	assert.Nil(t, readable(claim, g), "full: not read")
	g.release(0)
	assert.NotNil(t, readable(claim, g), "read again once a record is released")
}
