package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// TaskSource delivers the engine's queued tasks to the runtime, a pull
// source with broker-like semantics: it takes a task from the queue only
// after Intake.AwaitCapacity reported room, and a task refused as overloaded
// or handed back through Settle returns to the front of the queue.
type TaskSource struct {
	engine *Backend

	mu      sync.Mutex
	state   sourceState
	stop    context.CancelCauseFunc // ends the delivery loop
	stopped chan struct{}           // closed when the delivery loop has returned
}

type sourceState int

const (
	sourceIdle sourceState = iota
	sourceServing
	sourceStopped
)

var (
	_ ports.TaskSource     = (*TaskSource)(nil)
	_ ports.HealthReporter = (*TaskSource)(nil)
)

// errSourceStopped is the cause with which Stop ends the delivery loop.
var errSourceStopped = errors.New("memory task source stopped")

// Start starts the delivery loop in a goroutine owned by the source and
// returns at once. ctx bounds only starting: an already ended ctx makes
// Start fail, but delivery then runs until Stop, keeping ctx's values. Start
// fails if the source was started or stopped before.
func (s *TaskSource) Start(ctx context.Context, intake ports.Intake) error {
	if intake == nil {
		return errors.New("start memory task source: nil intake")
	}
	if ctx.Err() != nil {
		return fmt.Errorf("start memory task source: %w", context.Cause(ctx))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case sourceServing:
		return errors.New("start memory task source: already started")
	case sourceStopped:
		return fmt.Errorf("start memory task source: %w", domain.ErrClosed)
	}
	runCtx, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	s.state, s.stop, s.stopped = sourceServing, stop, make(chan struct{})
	s.engine.attach(intake)
	go func(stopped chan<- struct{}) {
		defer close(stopped)
		s.deliver(runCtx, intake)
	}(s.stopped)
	return nil
}

// Stop ends the delivery loop and waits for it, so that no Offer is made
// and nothing more is taken from the queue once it returns nil. A task taken
// from the queue but not yet offered goes back to its front. If ctx ends
// first, Stop returns ctx's cause and the loop still ends on its own. Tasks
// already offered stay valid: their Settle is honoured until Close. Stop is
// idempotent and safe without Start; a stopped source cannot be started
// again.
func (s *TaskSource) Stop(ctx context.Context) error {
	s.mu.Lock()
	wasServing := s.state == sourceServing
	s.state = sourceStopped
	stop, stopped := s.stop, s.stopped
	s.mu.Unlock()
	if stopped == nil {
		return nil // never started
	}
	if wasServing {
		stop(errSourceStopped)
	}
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop memory task source: %w", context.Cause(ctx))
	}
}

// Close implements ports.TaskSource: it stops the source if it was not
// stopped, then gives the tasks it offered and the runtime has not settled
// back to the front of the engine's queue, as a broker redelivers the
// uncommitted records of a consumer that left its group; their Settle is
// ignored from then on. Close is idempotent and safe without Start.
func (s *TaskSource) Close(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return fmt.Errorf("close memory task source: %w", err)
	}
	s.engine.revoke(s)
	return nil
}

// Healthy implements ports.HealthReporter: nil while the source serves, an
// error before Start and after Stop. The engine is in-process, so there is
// no connection to lose.
func (s *TaskSource) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case sourceIdle:
		return errors.New("memory task source not started")
	case sourceStopped:
		return fmt.Errorf("memory task source: %w", domain.ErrClosed)
	}
	return nil
}

// deliver is the delivery loop: await room, take the next task, offer it
// (ports.Pull), until ctx ends or the runtime drains.
func (s *TaskSource) deliver(ctx context.Context, intake ports.Intake) {
	for {
		err := ports.Pull(ctx, intake, func(ctx context.Context) error { return s.offerNext(ctx, intake) })
		if err != nil && !errors.Is(err, domain.ErrInvalidTask) {
			return // stopped or draining
		}
	}
}

// offerNext takes the next queued task, waiting for one, and offers it. A
// task the runtime does not take goes back to the front of the queue, as a
// broker re-reads an uncommitted offset first, except one refused as
// invalid, which the engine drops (Rejected).
func (s *TaskSource) offerNext(ctx context.Context, intake ports.Intake) error {
	task, ok := s.engine.take(ctx)
	if !ok {
		return context.Cause(ctx)
	}
	if ctx.Err() != nil {
		s.engine.requeue(task)
		return context.Cause(ctx)
	}
	d := s.engine.newDelivery(task, s)
	err := intake.Offer(ctx, d.port())
	if err == nil {
		return nil
	}
	d.withdraw(err)
	if errors.Is(err, domain.ErrInvalidTask) {
		s.engine.reject(task)
	} else {
		s.engine.requeue(task)
	}
	return err
}
