package app_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
)

// TestStatsScalingSignal: Stats reports the slots a type's running handlers
// hold, the tasks waiting for one and the age of the oldest, and the
// results waiting in a transport's outbox for the sink, each falling back
// to zero once the work is done.
func TestStatsScalingSignal(t *testing.T) {
	const slots, tasks = 2, 5
	gate := make(chan struct{})
	var mu sync.Mutex
	var running, peak int64
	h := newHarness(t, testConfig(), on("t", gated("slow", slots, gate, &running, &peak, &mu)))
	sinkGate := make(chan struct{})
	h.sinks["t"].gate = sinkGate // the sink holds every delivery until opened
	h.run(t)

	var settled []*settlement
	for i := range tasks {
		tk := task("run-stats", fmt.Sprintf("n%d", i), 1)
		tk.ExecutorType = "slow"
		settled = append(settled, h.sources["t"].mustOffer(t, tk))
	}
	var load domain.TypeLoad
	require.Eventually(t, func() bool {
		load = h.rt.Stats().Types["slow"]
		return load.SlotsInUse == slots && load.Queued == tasks-slots && load.OldestQueued > 0
	}, 5*time.Second, time.Millisecond, "parked handlers: %+v", &load)
	assert.Equal(t, slots, load.Slots)
	assert.True(t, load.Registered)
	assert.Equal(t, 0, h.rt.Stats().Outbox["t"], "results before any task finished")

	close(gate) // handlers finish; their results wait for the sink
	var stats app.Stats
	require.Eventually(t, func() bool {
		stats = h.rt.Stats()
		return stats.Outbox["t"] == tasks
	}, 5*time.Second, time.Millisecond, "results held by the sink: %+v", &stats)
	assert.Equal(t, domain.TypeLoad{Slots: slots, Limit: slots, Registered: true}, stats.Types["slow"], "slots or queue still taken with every handler done")

	close(sinkGate)
	for _, st := range settled {
		require.NoError(t, st.wait(t))
	}
	require.Eventually(t, func() bool { return h.rt.Stats().Outbox["t"] == 0 }, 5*time.Second, time.Millisecond,
		"results still counted in the outbox once acknowledged")
}
