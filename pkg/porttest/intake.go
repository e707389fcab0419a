package porttest

import (
	"context"
	"fmt"
	"sync"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// Intake is a test double of the runtime's side of a TaskSource. It behaves
// like the runtime where a source can tell: Offer never blocks, refuses a
// nil task, and an invalid (domain.Task.Validate) or malformed one when the
// delivery is Refusable or no result could name it, with
// domain.ErrInvalidTask (it accepts other invalid tasks, as the runtime
// does to answer them FAILED INVALID_TASK: see Offered.Invalid), refuses with
// domain.ErrOverloaded while capacity offered tasks are unsettled, and with
// domain.ErrDraining after Drain; AwaitCapacity blocks until there is room.
// Unlike the runtime it runs nothing: the test settles each accepted task
// itself (Offered.Settle), and it records everything it sees. Safe for
// concurrent use.
type Intake struct {
	mu sync.Mutex
	// changed is closed and replaced on every change, to wake WaitUntil.
	changed chan struct{}

	capacity       int
	draining       bool
	offers         []*Offered
	refusals       []Refusal
	cancels        []CancelCall
	refuseNext     []error
	refuseRules    []refuseRule
	outstanding    int
	maxOutstanding int
	awaitCalls     int
	block          *offerBlock // holds the next Offer (BlockNextOffer)
}

// offerBlock holds one Offer: entered is closed when it starts waiting,
// release when it may go on.
type offerBlock struct {
	entered, release chan struct{}
}

var _ ports.Intake = (*Intake)(nil)

// Offered is one task the Intake accepted.
type Offered struct {
	// Task is a copy of the offered task as the source built it.
	Task domain.Task
	// Redeliverable and Refusable are the Delivery's flags.
	Redeliverable, Refusable bool
	// Invalid is why the task is invalid (the delivery's Malformed, or
	// what domain.Task.Validate found), for a task accepted only to be
	// answered FAILED INVALID_TASK; nil for a valid task.
	Invalid error

	intake  *Intake
	settle  func(error)
	settled bool // guarded by intake.mu
}

// Refusal is one Offer the Intake refused, and why.
type Refusal struct {
	Task domain.Task // zero when the Delivery carried no task
	Err  error
}

// CancelCall is one Intake.Cancel call.
type CancelCall struct {
	TaskID string
	Reason string
	// Found is what Cancel returned: an unsettled offered task had that
	// task id, idempotency key or "runId:nodeId:attempt" key.
	Found bool
}

type refuseRule struct {
	match func(domain.Task) bool
	err   error
}

// NewIntake returns an Intake that holds at most capacity unsettled tasks;
// a capacity below 1 is taken as 1.
func NewIntake(capacity int) *Intake {
	return &Intake{capacity: max(capacity, 1), changed: make(chan struct{})}
}

func (in *Intake) notifyLocked() {
	close(in.changed)
	in.changed = make(chan struct{})
}

// Offer implements ports.Intake. Refusals are checked in this order: no
// task, Drain, RefuseNext, RefuseMatching, validity, capacity.
func (in *Intake) Offer(_ context.Context, d ports.Delivery) error {
	in.mu.Lock()
	block := in.block
	in.block = nil
	in.mu.Unlock()
	if block != nil {
		close(block.entered)
		<-block.release
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if d.Task == nil {
		return in.refuseLocked(domain.Task{}, fmt.Errorf("%w: delivery carries no task", domain.ErrInvalidTask))
	}
	task := *d.Task
	if in.draining {
		return in.refuseLocked(task, fmt.Errorf("porttest intake: %w", domain.ErrDraining))
	}
	if len(in.refuseNext) > 0 {
		err := in.refuseNext[0]
		in.refuseNext = in.refuseNext[1:]
		return in.refuseLocked(task, err)
	}
	for _, rule := range in.refuseRules {
		if rule.match(task) {
			return in.refuseLocked(task, rule.err)
		}
	}
	problem := task.Validate()
	if d.Malformed != nil {
		problem = fmt.Errorf("%w: %w", domain.ErrInvalidTask, d.Malformed)
	}
	if problem != nil && (d.Refusable || !task.Addressable()) {
		return in.refuseLocked(task, problem)
	}
	if in.outstanding >= in.capacity {
		return in.refuseLocked(task, fmt.Errorf("porttest intake: %w: %d of %d tasks unsettled", domain.ErrOverloaded, in.outstanding, in.capacity))
	}
	in.offers = append(in.offers, &Offered{Task: task, Redeliverable: d.Redeliverable, Refusable: d.Refusable, Invalid: problem,
		intake: in, settle: d.Settle})
	in.outstanding++
	in.maxOutstanding = max(in.maxOutstanding, in.outstanding)
	in.notifyLocked()
	return nil
}

func (in *Intake) refuseLocked(task domain.Task, err error) error {
	in.refusals = append(in.refusals, Refusal{Task: task, Err: err})
	in.notifyLocked()
	return err
}

// AwaitCapacity implements ports.Intake: it returns the room left once
// there is some, domain.ErrDraining after Drain (as the runtime does), or
// ctx's error.
func (in *Intake) AwaitCapacity(ctx context.Context) (int, error) {
	in.mu.Lock()
	in.awaitCalls++
	in.notifyLocked()
	in.mu.Unlock()
	for {
		in.mu.Lock()
		room, draining, changed := in.capacity-in.outstanding, in.draining, in.changed
		in.mu.Unlock()
		switch {
		case draining:
			return 0, fmt.Errorf("porttest intake: %w", domain.ErrDraining)
		case room > 0:
			return room, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Cancel implements ports.Intake: it records the call and reports whether an
// unsettled offered task matches taskID (task id, idempotency key, or
// "runId:nodeId:attempt").
func (in *Intake) Cancel(taskID, reason string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	found := false
	for _, o := range in.offers {
		t := o.Task
		if !o.settled && (t.TaskID == taskID || t.Key() == taskID || domain.IdempotencyKey(t.RunID, t.NodeID, t.Attempt) == taskID) {
			found = true
			break
		}
	}
	in.cancels = append(in.cancels, CancelCall{TaskID: taskID, Reason: reason, Found: found})
	in.notifyLocked()
	return found
}

// BlockNextOffer makes the next Offer wait, before it does anything, until
// release is called; entered is closed when it starts waiting. It stands for
// an Offer that a concurrent Stop catches in progress (a goroutine that
// lost the processor in the middle of it): Stop must wait for it.
func (in *Intake) BlockNextOffer() (entered <-chan struct{}, release func()) {
	block := &offerBlock{entered: make(chan struct{}), release: make(chan struct{})}
	in.mu.Lock()
	in.block = block
	in.mu.Unlock()
	var once sync.Once
	return block.entered, func() { once.Do(func() { close(block.release) }) }
}

// RefuseNext makes the next Offer, of any task, return err. Calls queue up:
// each refuses one more Offer.
func (in *Intake) RefuseNext(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.refuseNext = append(in.refuseNext, err)
}

// RefuseMatching makes every Offer of a task for which match returns true
// return err, for the rest of the Intake's life. match runs with the
// Intake's lock held and must not call the Intake.
func (in *Intake) RefuseMatching(match func(domain.Task) bool, err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.refuseRules = append(in.refuseRules, refuseRule{match: match, err: err})
}

// Drain makes the Intake behave like a draining runtime: Offer refuses with
// domain.ErrDraining and AwaitCapacity returns it. Offered tasks may still
// be settled.
func (in *Intake) Drain() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.draining = true
	in.notifyLocked()
}

// Settle settles the offered task: it calls the source's Settle callback
// once, then frees the task's room. It reports false, doing nothing, if the
// task was settled before.
func (o *Offered) Settle(err error) bool {
	in := o.intake
	in.mu.Lock()
	if o.settled {
		in.mu.Unlock()
		return false
	}
	o.settled = true
	in.mu.Unlock()

	if o.settle != nil {
		o.settle(err)
	}

	in.mu.Lock()
	defer in.mu.Unlock()
	in.outstanding--
	in.notifyLocked()
	return true
}

// Settled reports whether Settle was called.
func (o *Offered) Settled() bool {
	o.intake.mu.Lock()
	defer o.intake.mu.Unlock()
	return o.settled
}

// SettleAll settles every unsettled offered task with err, and returns how
// many it settled.
func (in *Intake) SettleAll(err error) int {
	n := 0
	for _, o := range in.Outstanding() {
		if o.Settle(err) {
			n++
		}
	}
	return n
}

// Offers returns the accepted offers in order, including settled ones.
func (in *Intake) Offers() []*Offered {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*Offered(nil), in.offers...)
}

// Outstanding returns the accepted offers not yet settled, in offer order.
func (in *Intake) Outstanding() []*Offered {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []*Offered
	for _, o := range in.offers {
		if !o.settled {
			out = append(out, o)
		}
	}
	return out
}

// MaxOutstanding returns the largest number of unsettled offered tasks ever
// held at once.
func (in *Intake) MaxOutstanding() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.maxOutstanding
}

// Capacity returns the capacity the Intake was created with.
func (in *Intake) Capacity() int { return in.capacity }

// Refusals returns the refused offers in order.
func (in *Intake) Refusals() []Refusal {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Refusal(nil), in.refusals...)
}

// Attempts returns how many Offer calls were made, accepted or refused.
func (in *Intake) Attempts() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.offers) + len(in.refusals)
}

// AwaitCalls returns how many AwaitCapacity calls were made.
func (in *Intake) AwaitCalls() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.awaitCalls
}

// Cancels returns the Cancel calls in order.
func (in *Intake) Cancels() []CancelCall {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]CancelCall(nil), in.cancels...)
}

// WaitUntil waits until cond returns true, or returns ctx's cause. cond is
// evaluated now and after every change (an offer, refusal, settlement,
// cancellation or AwaitCapacity call), without the Intake's lock held, so it
// may call the Intake's getters.
func (in *Intake) WaitUntil(ctx context.Context, cond func() bool) error {
	for {
		in.mu.Lock()
		changed := in.changed
		in.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// wake wakes WaitUntil callers without a change, for a condition that also
// watches something else.
func (in *Intake) wake() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.notifyLocked()
}

// String summarises what the Intake saw, for failure messages.
func (in *Intake) String() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return fmt.Sprintf("intake(capacity %d, %d accepted, %d unsettled, max %d unsettled, %d refused, %d cancels, %d AwaitCapacity calls, draining %t)",
		in.capacity, len(in.offers), in.outstanding, in.maxOutstanding, len(in.refusals), len(in.cancels), in.awaitCalls, in.draining)
}
