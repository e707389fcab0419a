package memory

import "slices"

// history keeps the most recent limit entries of a record, oldest first.
// Dropping the oldest entry is amortised O(1): the slice is compacted only
// once half of it has been dropped.
type history[T any] struct {
	limit int
	items []T
	head  int // index of the oldest kept entry
}

func newHistory[T any](limit int) *history[T] {
	return &history[T]{limit: limit}
}

// add appends v and reports the entry it dropped to stay within the limit.
func (h *history[T]) add(v T) (dropped T, ok bool) {
	h.items = append(h.items, v)
	if len(h.items)-h.head <= h.limit {
		return dropped, false
	}
	dropped, ok = h.items[h.head], true
	var zero T
	h.items[h.head] = zero
	h.head++
	if h.head*2 >= len(h.items) {
		n := copy(h.items, h.items[h.head:])
		clear(h.items[n:])
		h.items = h.items[:n]
		h.head = 0
	}
	return dropped, ok
}

// all returns a copy of the kept entries, oldest first.
func (h *history[T]) all() []T {
	return slices.Clone(h.items[h.head:])
}

// last returns the newest entry.
func (h *history[T]) last() (T, bool) {
	if len(h.items) == h.head {
		var zero T
		return zero, false
	}
	return h.items[len(h.items)-1], true
}

func (h *history[T]) len() int { return len(h.items) - h.head }
