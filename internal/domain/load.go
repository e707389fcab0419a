package domain

import "time"

// TypeLoad is one executor type's slots, queue and registration at one
// moment: what the runtime reports, and what the scaling signal and the
// alerts are computed from.
type TypeLoad struct {
	// Slots is the type's MaxConcurrentTasks; SlotsInUse of them are held
	// by running handlers, including handlers abandoned at their deadline
	// that still run (their slot is not free until they return).
	Slots, SlotsInUse int
	// Limit is how many of the Slots handlers may hold now: Slots, unless
	// the type's concurrency adapts (Descriptor.AdaptiveConcurrency), when
	// it is the adaptive limit, from 1 to Slots. SlotsInUse may exceed it
	// for a while after it falls: running handlers are never stopped, fewer
	// start.
	Limit int
	// Queued counts the tasks admitted and waiting for a slot or a worker;
	// OldestQueued is how long the oldest of them has waited (0 for none).
	Queued       int
	OldestQueued time.Duration
	// Registered: the engine accepted the type's last registration, and
	// nothing since suggests it forgot it.
	Registered bool
	// RateLimit is the type's rate limit in tasks per second, 0 when it
	// has none.
	RateLimit float64
}
