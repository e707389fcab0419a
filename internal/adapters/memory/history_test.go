package memory

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHistoryKeepsTheNewest(t *testing.T) {
	h := newHistory[int](3)
	var dropped []int
	for i := range 10 {
		if d, ok := h.add(i); ok {
			dropped = append(dropped, d)
		}
		require.LessOrEqual(t, h.len(), 3)
		require.LessOrEqual(t, len(h.items), 6, "compacted once half is dropped")
	}
	assert.Equal(t, []int{7, 8, 9}, h.all())
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5, 6}, dropped)
	last, ok := h.last()
	assert.True(t, ok)
	assert.Equal(t, 9, last)

	all := h.all()
	all[0] = 100
	assert.Equal(t, []int{7, 8, 9}, h.all(), "all returns a copy")
}

func TestHistoryEmpty(t *testing.T) {
	h := newHistory[string](2)
	_, ok := h.last()
	assert.False(t, ok)
	assert.Empty(t, h.all())
}
