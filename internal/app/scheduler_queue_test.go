package app

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A lane's queue (scheduler.go) keeps its jobs in order through pushes,
// pops, removals and filtering, and reuses its array once emptied.
func TestJobQueue(t *testing.T) {
	var q jobQueue
	jobs := make([]*job, 6)
	for i := range jobs {
		jobs[i] = indexJob(string(rune('a' + i)))
	}
	for _, j := range jobs[:4] {
		q.push(j)
	}
	require.Same(t, jobs[0], q.pop())
	require.True(t, q.remove(jobs[2]))
	assert.False(t, q.remove(jobs[2]), "removed twice")
	q.push(jobs[4])
	assert.Equal(t, []*job{jobs[1], jobs[3], jobs[4]}, q.jobs())

	taken := q.removeIf(func(j *job) bool { return j == jobs[3] })
	assert.Equal(t, []*job{jobs[3]}, taken)
	assert.Equal(t, []*job{jobs[1], jobs[4]}, q.jobs())

	require.Same(t, jobs[1], q.pop())
	require.Same(t, jobs[4], q.pop())
	assert.Zero(t, q.len())
	array := cap(q.list)
	q.push(jobs[5])
	assert.Equal(t, array, cap(q.list), "an emptied queue did not reuse its array")
	assert.Equal(t, []*job{jobs[5]}, q.jobs())
	for _, j := range q.list[q.len():cap(q.list)] {
		assert.Nil(t, j, "a job taken out is still held")
	}
}
