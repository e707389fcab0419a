package app

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// The outbox's queue is a ring (outbox.go): items leave it in the order
// they came, in batches of at most batchSize, across wrapping and growth.
func TestOutboxQueueKeepsOrderAcrossWrapAndGrowth(t *testing.T) {
	o := newOutbox("t", nil, Config{OutboxSize: 1000, ResultBatchSize: 3}, nil, nil)
	next, want := 0, 0
	put := func(n int) {
		for range n {
			require.True(t, o.put(outboxItem{result: domain.Result{NodeID: strconv.Itoa(next)}}))
			next++
		}
	}
	var buf []outboxItem
	take := func() (int, bool) {
		batch, _, more := o.take(buf)
		buf = batch
		for _, it := range batch {
			assert.Equal(t, strconv.Itoa(want), it.result.NodeID, "out of order")
			want++
		}
		return len(batch), more
	}

	put(minQueue - 2) // fill the first array almost
	for range 4 {
		n, more := take()
		require.Equal(t, 3, n)
		require.True(t, more)
	}
	put(minQueue) // wraps around, then grows while wrapped
	for o.waiting() > 0 {
		n, _ := take()
		require.LessOrEqual(t, n, 3)
		require.Positive(t, n)
	}
	assert.Equal(t, next, want, "items lost")
	_, ok, more := o.take(buf)
	assert.False(t, ok)
	assert.False(t, more)
	for i := range o.queue {
		assert.Equal(t, outboxItem{}, o.queue[i], "a taken item is kept in the ring")
	}
	assert.Equal(t, int64(next), o.backlog.Load(), "taking ends no item's backlog; settled does")
}
