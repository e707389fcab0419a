package app

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// Unit tests of the task table's key index (tasks.go): jobs in flight and
// remembered results by key, the least recently used result forgotten
// first.

func indexJob(node string) *job {
	return newJob(&domain.Task{RunID: "run", NodeID: node, Attempt: 1}, nil, false)
}

func remembered(node string) domain.Result {
	return domain.Result{RunID: "run", NodeID: node, Attempt: 1, Status: domain.StatusCompleted}
}

func TestKeyIndexFindsJobsInFlightThenTheirResults(t *testing.T) {
	x := newKeyIndex(2)
	j := indexJob("a")
	_, _, found := x.find(j.key)
	assert.False(t, found)

	x.track(j)
	inFlight, _, found := x.find(j.key)
	require.True(t, found)
	assert.Same(t, j, inFlight)
	assert.Same(t, j, x.inFlight(j.key))
	assert.Equal(t, []*job{j}, x.jobs())

	res := remembered("a")
	x.untrack(j, &res)
	inFlight, got, found := x.find(j.key)
	require.True(t, found)
	assert.Nil(t, inFlight)
	assert.Equal(t, res, got)
	assert.Nil(t, x.inFlight(j.key), "a finished task is still in flight")
	assert.Empty(t, x.jobs())
}

// A job handed back or given up (no result) is forgotten: its task may run
// again.
func TestKeyIndexForgetsAJobWithoutAResult(t *testing.T) {
	x := newKeyIndex(2)
	j := indexJob("a")
	x.track(j)
	x.untrack(j, nil)
	_, _, found := x.find(j.key)
	assert.False(t, found)
	assert.Zero(t, x.remembered)

	again := indexJob("a")
	x.track(again)
	assert.Same(t, again, x.inFlight("run:a:1"))
	assert.Len(t, x.slots, 1, "the forgotten slot was not reused")
}

// Beyond its capacity the index forgets the least recently used result:
// finding a result makes it the most recent. Jobs in flight never count.
func TestKeyIndexForgetsTheLeastRecentlyUsedResult(t *testing.T) {
	x := newKeyIndex(2)
	inFlight := indexJob("running")
	x.track(inFlight)
	for _, node := range []string{"a", "b"} {
		j := indexJob(node)
		x.track(j)
		res := remembered(node)
		x.untrack(j, &res)
	}
	_, _, found := x.find("run:a:1") // a is now more recent than b
	require.True(t, found)

	c := indexJob("c")
	x.track(c)
	res := remembered("c")
	x.untrack(c, &res)

	_, _, found = x.find("run:b:1")
	assert.False(t, found, "b, the least recently used, is remembered still")
	for _, key := range []string{"run:a:1", "run:c:1"} {
		_, _, found := x.find(key)
		assert.True(t, found, "%s forgotten", key)
	}
	assert.Same(t, inFlight, x.inFlight("run:running:1"), "a job in flight was forgotten")
	assert.Equal(t, 2, x.remembered)
	assert.Len(t, x.byKey, 3)
	assert.Len(t, x.slots, 4)
	assert.Len(t, x.free, 1, "b's slot is not free for the next task")
}

// untrack ignores a job the index does not track, such as one already
// untracked: it never forgets another task's entry in its place.
func TestKeyIndexUntrackIgnoresAJobItDoesNotTrack(t *testing.T) {
	x := newKeyIndex(2)
	j := indexJob("a")
	x.track(j)
	x.untrack(j, nil)
	other := indexJob("b")
	x.track(other) // reuses j's slot
	x.untrack(j, nil)
	assert.Same(t, other, x.inFlight("run:b:1"))
	x.untrack(indexJob("never-tracked"), nil)
	assert.Same(t, other, x.inFlight("run:b:1"))
}
