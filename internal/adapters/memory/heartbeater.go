package memory

import (
	"context"
	"fmt"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// Heartbeater reports liveness and load to the engine's registry.
type Heartbeater struct {
	engine *Backend
}

var _ ports.Heartbeater = (*Heartbeater)(nil)

// Heartbeat records hb for its executor id. It returns an error wrapping
// domain.ErrNotRegistered when the engine does not know the id (never
// registered, unregistered or forgotten), and other errors when ctx has
// ended or a heartbeat fault is injected (wrapping ErrInjected).
func (h *Heartbeater) Heartbeat(ctx context.Context, hb domain.Heartbeat) error {
	if ctx.Err() != nil {
		return fmt.Errorf("heartbeat %s to the memory engine: %w", hb.ExecutorID, context.Cause(ctx))
	}
	e := h.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failHeartbeats > 0 {
		e.failHeartbeats--
		return fmt.Errorf("heartbeat %s to the memory engine: %w", hb.ExecutorID, ErrInjected)
	}
	if _, ok := e.registrations[hb.ExecutorID]; !ok {
		return fmt.Errorf("heartbeat %s to the memory engine: %w", hb.ExecutorID, domain.ErrNotRegistered)
	}
	beats, ok := e.heartbeats[hb.ExecutorID]
	if !ok {
		beats = newHistory[domain.Heartbeat](e.historyLimit)
		e.heartbeats[hb.ExecutorID] = beats
	}
	beats.add(hb)
	e.notifyLocked()
	return nil
}
