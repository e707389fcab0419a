package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// registerAll registers every hosted type, each retried with backoff until
// it succeeds. It returns ctx's error if ctx ends first.
func (r *Runtime) registerAll(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, e := range r.executors {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				if r.register(ctx, e, true) == nil {
					return
				}
				if r.cfg.RegisterBackoff.Wait(ctx, attempt) != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// register makes one registration attempt for e. A failure marks e
// unregistered (hence not ready) only when needed is set: the engine may not
// know e (start-up, a failed heartbeat). A periodic refresh that fails while
// heartbeats succeed leaves e registered, and is tried again at the next
// heartbeat.
func (r *Runtime) register(ctx context.Context, e *hostedExecutor, needed bool) error {
	callCtx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	err := r.registrar.Register(callCtx, e.reg)
	if err != nil {
		if needed {
			e.registered.Store(false)
			e.registerErr.Store(&err)
		}
		r.cfg.Observer.RegistrationFailed(e.desc.Type)
		r.log.Warn("registration failed", slog.String("executor_id", e.reg.ExecutorID),
			slog.String("executor_type", e.desc.Type), slog.Any("error", err))
		return err
	}
	e.lastRegistered.Store(time.Now().UnixNano())
	e.registered.Store(true)
	r.log.Info("registered", slog.String("executor_id", e.reg.ExecutorID), slog.String("executor_type", e.desc.Type),
		slog.String("communication_type", string(e.reg.CommunicationType)), slog.String("endpoint", e.reg.Endpoint))
	return nil
}

// heartbeatLoop heartbeats every type about every HeartbeatInterval (10%
// jitter), re-registering a type once after each failed heartbeat, once
// after a successful heartbeat while its last registration attempt failed,
// and periodically every ReregisterInterval. A sign that the engine may
// have forgotten the executors (suspects, see ports.RegistrationWatcher)
// re-registers every type at once.
func (r *Runtime) heartbeatLoop(ctx context.Context, suspects <-chan string) {
	pace := domain.Backoff{Initial: r.cfg.HeartbeatInterval, Multiplier: 1, Jitter: 0.1}
	tick := time.NewTimer(pace.Delay(0))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case reason := <-suspects:
			r.reregisterAll(ctx, reason)
		case <-tick.C:
			for _, e := range r.executors {
				r.heartbeat(ctx, e)
			}
			tick.Reset(pace.Delay(0))
		}
	}
}

// reregisterAll registers every type again because the engine may have
// forgotten them: until the engine accepts a type's registration, the type
// counts as unregistered and the runtime as not ready. A failed attempt is
// retried at the next heartbeat.
func (r *Runtime) reregisterAll(ctx context.Context, reason string) {
	if r.draining.Load() {
		return // a draining executor must not advertise itself again
	}
	r.log.Info("registering every executor type again: the engine may have forgotten them", slog.String("reason", reason))
	suspected := errors.New("re-registering: " + reason)
	for _, e := range r.executors {
		e.registered.Store(false)
		e.registerErr.Store(&suspected)
	}
	for _, e := range r.executors {
		_ = r.register(ctx, e, true)
	}
}

// watchRegistrations merges the channels of the ports that watch for signs
// of a forgetful engine into one, until ctx ends; the caller waits for the
// goroutines through wg.
func (r *Runtime) watchRegistrations(ctx context.Context, wg *sync.WaitGroup) <-chan string {
	merged := make(chan string, 1)
	for _, ch := range r.suspects {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case reason := <-ch:
					select {
					case merged <- reason:
					default: // a re-registration is pending already
					}
				}
			}
		})
	}
	return merged
}

func (r *Runtime) heartbeat(ctx context.Context, e *hostedExecutor) {
	status := domain.HealthHealthy
	if r.draining.Load() {
		status = domain.HealthDraining
	}
	hb := domain.Heartbeat{
		ExecutorID:     e.reg.ExecutorID,
		CurrentTasks:   int(e.running.Load()),
		CompletedTasks: int(e.completed.Load()),
		FailedTasks:    int(e.failed.Load()),
		Status:         status,
		Load:           r.heartbeatLoad(e, time.Now()),
	}
	callCtx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	err := r.heartbeater.Heartbeat(callCtx, hb)
	cancel()
	if err != nil {
		r.cfg.Observer.HeartbeatFailed(e.desc.Type)
	}
	if r.draining.Load() {
		return // a draining executor must not advertise itself again
	}
	if err != nil {
		r.log.Warn("heartbeat failed, re-registering", slog.String("executor_id", e.reg.ExecutorID), slog.Any("error", err))
		_ = r.register(ctx, e, true)
		return
	}
	// A re-registration that failed (the engine was down when a heartbeat
	// failed) leaves the type unregistered, hence not ready, although the
	// engine, back with its state, now accepts its heartbeats: register it
	// again rather than wait for the periodic re-registration.
	switch {
	case !e.registered.Load():
		_ = r.register(ctx, e, true)
	case r.cfg.ReregisterInterval > 0 && sinceUnixNano(e.lastRegistered.Load()) >= r.cfg.ReregisterInterval:
		_ = r.register(ctx, e, false)
	}
}

// unregisterAll unregisters every type that was ever registered, except
// shared ids (see domain.Registration.Shared).
func (r *Runtime) unregisterAll() {
	var wg sync.WaitGroup
	for _, e := range r.executors {
		if e.lastRegistered.Load() == 0 || e.reg.Shared {
			continue // never registered, or still served by other replicas
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
			defer cancel()
			if err := r.registrar.Unregister(ctx, e.reg.ExecutorID); err != nil {
				r.log.Error("unregister failed", slog.String("executor_id", e.reg.ExecutorID), slog.Any("error", err))
				return
			}
			e.registered.Store(false)
			r.log.Info("unregistered", slog.String("executor_id", e.reg.ExecutorID))
		})
	}
	wg.Wait()
}
