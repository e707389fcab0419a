package main

import (
	"context"
	"slices"
	"sync"
	"time"
)

// recorder measures each task's latency from its *intended* send time,
// fixed by the schedule before the run, to the arrival of its result. A
// send that falls behind schedule is charged for the delay, so a stall in
// the system under test shows up in the figures rather than slowing the
// load down (no coordinated omission).
type recorder struct {
	start    time.Time
	interval time.Duration // between intended sends; 0 when closed-loop
	mu       sync.Mutex
	done     []time.Duration // by task index; 0 until its first result
	sent     []time.Time     // actual send time, for closed-loop runs
	answered int
	all      chan struct{} // closed when every task has an answer
	// answers receives a token per first answer in closed-loop runs.
	answers chan struct{}
	end     time.Time // when the last first answer arrived
}

func newRecorder(n int, rate float64) *recorder {
	r := &recorder{done: make([]time.Duration, n), sent: make([]time.Time, n), all: make(chan struct{})}
	if rate > 0 {
		r.interval = time.Duration(float64(time.Second) / rate)
	} else {
		r.answers = make(chan struct{}, n)
	}
	return r
}

// intended is task i's scheduled send time.
func (r *recorder) intended(i int) time.Time {
	if r.interval == 0 {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	return r.intendedLocked(i)
}

// intendedLocked is intended, for a caller holding r.mu in closed-loop
// runs.
func (r *recorder) intendedLocked(i int) time.Time {
	if r.interval == 0 {
		return r.sent[i]
	}
	return r.start.Add(time.Duration(i) * r.interval)
}

// markSent records the send time of task i in closed-loop runs, where a
// task's latency counts from its actual send.
func (r *recorder) markSent(i int) {
	r.mu.Lock()
	r.sent[i] = time.Now()
	r.mu.Unlock()
}

// answer records the first result of task i; later ones (redeliveries) and
// indexes out of range are ignored. It reports whether it was the first.
func (r *recorder) answer(i int) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.done) || r.done[i] != 0 {
		return false
	}
	r.done[i] = max(now.Sub(r.intendedLocked(i)), time.Nanosecond)
	r.answered++
	if r.answers != nil {
		r.answers <- struct{}{} // never blocks: room for n
	}
	if r.answered == len(r.done) {
		r.end = now
		close(r.all)
	}
	return true
}

// wait blocks until every task has an answer or ctx ends.
func (r *recorder) wait(ctx context.Context) error {
	select {
	case <-r.all:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// count returns how many tasks have an answer.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answered
}

// throughput is tasks answered per second from the first send to the last
// answer; call it after wait returned nil.
func (r *recorder) throughput() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return float64(r.answered) / r.end.Sub(r.start).Seconds()
}

// censor gives every task still unanswered at now the latency it has
// reached by then, a lower bound of its own, so that a run cut short at a
// deadline reports the tasks it still owes instead of leaving them out
// (which would flatter the figures). It returns how many it censored; a
// later answer to one of them is ignored.
func (r *recorder) censor(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i, d := range r.done {
		// A task not sent yet (closed loop: never sent; open loop: its time
		// has not come) has no latency at all.
		at := r.intendedLocked(i)
		if d != 0 || at.IsZero() || at.After(now) {
			continue
		}
		r.done[i] = max(now.Sub(at), time.Nanosecond)
		n++
	}
	return n
}

// Percentiles of one run, in milliseconds.
type Percentiles struct {
	P50, P90, P99, P999, Max float64
}

func (r *recorder) percentiles() Percentiles {
	return mergedPercentiles(r)
}

// mergedPercentiles are the percentiles of the tasks of several runs taken
// together, as if they were one run (rounds of one measurement, say).
func mergedPercentiles(recs ...*recorder) Percentiles {
	var lat []time.Duration
	for _, r := range recs {
		r.mu.Lock()
		lat = append(lat, r.done...)
		r.mu.Unlock()
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := min(len(lat)-1, int(q*float64(len(lat))))
		return float64(lat[i]) / float64(time.Millisecond)
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999), Max: at(1)}
}

// openLoop calls send(i) for i in [0, n) at r's schedule, each on its own
// goroutine when async is set (a blocking call such as a push must not
// delay the next send). It never waits for answers: the schedule, not the
// system under test, sets the pace.
func openLoop(ctx context.Context, r *recorder, n int, async bool, send func(i int)) {
	r.start = time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range n {
		if wait := time.Until(r.intended(i)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
		}
		if async {
			wg.Go(func() { send(i) })
		} else {
			send(i)
		}
	}
}

// closedLoop keeps inFlight tasks outstanding until n are sent: a new task
// leaves as soon as an answer arrives. r must be a closed-loop recorder
// (rate 0). It measures saturated throughput; send must not block for
// long (push sends run it on a goroutine of their own).
func closedLoop(ctx context.Context, r *recorder, n, inFlight int, send func(i int)) {
	r.start = time.Now()
	for i := range n {
		if i >= inFlight {
			select {
			case <-r.answers:
			case <-ctx.Done():
				return
			}
		}
		r.markSent(i)
		send(i)
	}
}
