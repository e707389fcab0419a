package network

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// TestSlowLink runs the executor over a link with 50 ms of latency each
// way, on both paths, from before it first connects to the end, with the
// push intake (the Gamelan engine's path) and the StreamTasks intake.
//
// It proves that latency alone costs no task and no wrong answer. It
// reports, in Notes, the latency of a task alone on the link (one at a
// time: what a workflow's sequential steps pay), and the throughput and
// latency of a burst, and the duplicates, which there should be none of:
// every deadline on the path is seconds long.
func TestSlowLink(t *testing.T) {
	t.Parallel()
	const delay = 50 * time.Millisecond
	alone, burst := testkit.Pick(10, 50), testkit.Pick(200, 2000)
	for _, intake := range []string{"push", "stream"} {
		t.Run(intake, func(t *testing.T) {
			o := &testkit.Outcome{Scenario: "slow link 50ms each way, " + intake}
			s := startStack(t, intake, o, func(p *testkit.Proxy) { p.Delay(delay) })

			// One at a time: the round trips a single task pays.
			var single []submitted
			for range alone {
				sub := s.submitOne(t)
				require.NoError(t, s.results.waitFor([]string{sub.key}, waitLong))
				single = append(single, sub)
			}

			// A burst: what the link lets through.
			began := time.Now()
			for range burst {
				s.submitOne(t)
			}
			s.waitAllAnswered(t)
			took := time.Since(began)
			s.checkResults(t)

			aloneLat, burstLat := s.latencies(single...), s.latencies(s.submitted()[alone:]...)
			// A task crosses the link at least twice (the task one way, its
			// result the other).
			assert.GreaterOrEqual(t, aloneLat[0], 2*delay, "a task was answered faster than the link allows")
			o.Notes = map[string]any{
				"intake":            intake,
				"delayEachWayMs":    delay.Milliseconds(),
				"aloneTasks":        alone,
				"aloneLatencyP50Ms": percentile(aloneLat, 0.5),
				"aloneLatencyMaxMs": percentile(aloneLat, 1),
				"burstTasks":        burst,
				"burstSeconds":      took.Seconds(),
				"burstTasksPerSec":  float64(burst) / took.Seconds(),
				"burstLatencyP50Ms": percentile(burstLat, 0.5),
				"burstLatencyP99Ms": percentile(burstLat, 0.99),
				"engineDuplicates":  s.engine.Counters().Duplicates,
				"redeliveries":      s.redeliveries(),
				"engineProxy":       proxyNotes(s.engineProxy),
				"pushProxy":         proxyNotes(s.pushProxy),
			}
			o.Check(t)
		})
	}
}

// TestLossyLink makes both paths reset a connection instead of forwarding
// a chunk with probability 1% (about one message in a hundred) under a
// steady load, with the push intake and the StreamTasks intake.
//
// It proves that resets cost no task and no wrong answer: a push whose
// connection broke is retried by the engine and deduplicated by the
// executor; a result whose call broke is resent; a task sent on a stream
// that broke is handed out again by the engine once its result is overdue
// (7 s here). It asserts that connections were indeed reset, and reports
// how many, and the duplicates they caused.
func TestLossyLink(t *testing.T) {
	t.Parallel()
	const dropRate, perSecond = 0.01, 50
	tasks := testkit.Pick(300, 3000)
	for _, intake := range []string{"push", "stream"} {
		t.Run(intake, func(t *testing.T) {
			o := &testkit.Outcome{Scenario: "lossy link 1% resets, " + intake}
			s := startStack(t, intake, o, nil)
			s.engineProxy.DropRate(dropRate)
			s.pushProxy.DropRate(dropRate)

			// A steady load, so that resets land on tasks in every stage.
			began := time.Now()
			tick := time.NewTicker(time.Second / perSecond)
			for range tasks {
				<-tick.C
				s.submitOne(t)
			}
			tick.Stop()
			s.waitAllAnswered(t)
			took := time.Since(began)
			s.checkResults(t)

			engine, push := s.engineProxy.Stats(), s.pushProxy.Stats()
			require.Positive(t, engine.Dropped+push.Dropped, "no connection was reset: the scenario proves nothing")
			lat := s.latencies()
			o.Notes = map[string]any{
				"intake":           intake,
				"dropRate":         dropRate,
				"submittedPerSec":  perSecond,
				"resetsEnginePath": engine.Dropped,
				"resetsPushPath":   push.Dropped,
				"seconds":          took.Seconds(),
				"engineDuplicates": s.engine.Counters().Duplicates,
				"redeliveries":     s.redeliveries(),
				"latencyP50Ms":     percentile(lat, 0.5),
				"latencyMaxMs":     percentile(lat, 1),
				"engineProxy":      proxyNotes(s.engineProxy),
				"pushProxy":        proxyNotes(s.pushProxy),
			}
			o.Check(t)
		})
	}
}
