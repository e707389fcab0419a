package memory

import (
	"context"
	"errors"
	"fmt"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// Registrar registers executor types with the engine's registry.
type Registrar struct {
	engine *Backend
}

var _ ports.Registrar = (*Registrar)(nil)

// Register records a copy of reg under its executor id, replacing an earlier
// registration of the id; a forgotten id becomes known again. It fails,
// recording nothing, when ctx has ended, the executor id is empty, or a
// registration fault is injected (wrapping ErrInjected).
func (r *Registrar) Register(ctx context.Context, reg domain.Registration) error {
	if ctx.Err() != nil {
		return fmt.Errorf("register %s with the memory engine: %w", reg.ExecutorID, context.Cause(ctx))
	}
	if reg.ExecutorID == "" {
		return errors.New("register with the memory engine: executor id is empty")
	}
	e := r.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failRegistrations > 0 {
		e.failRegistrations--
		return fmt.Errorf("register %s with the memory engine: %w", reg.ExecutorID, ErrInjected)
	}
	e.registrations[reg.ExecutorID] = cloneRegistration(reg)
	e.notifyLocked()
	return nil
}

// Unregister removes the executor id from the registry and records the call
// in Unregistered; an id the engine does not know is not an error. It fails
// when ctx has ended.
func (r *Registrar) Unregister(ctx context.Context, executorID string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("unregister %s from the memory engine: %w", executorID, context.Cause(ctx))
	}
	e := r.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.registrations, executorID)
	e.unregistered.add(executorID)
	e.notifyLocked()
	return nil
}
