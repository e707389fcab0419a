package ports

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/gamelan-go/executor/internal/domain"
)

// Verdict is a Gate's answer to one pushed task, which each push source
// maps to its wire (an ack code, an HTTP status).
type Verdict int

const (
	// Accepted: the runtime took the task; its result goes through the
	// transport's ResultSink.
	Accepted Verdict = iota
	// Unauthenticated: the caller's token did not pass (401).
	Unauthenticated
	// BadRequest: the request or the task is invalid; nothing runs (400).
	BadRequest
	// Unavailable: the runtime is full or draining, or the source is not
	// started or stopped; the engine should try again later (503).
	Unavailable
)

// errNotAttached refuses a task pushed before Start or after Stop.
var errNotAttached = errors.New("executor is not accepting tasks (starting or shutting down)")

// RefusalLog writes a log line about a refused task unless too many lines of
// that key were written lately (telemetry.Throttle is one), since a hostile
// caller could otherwise fill the logs at will.
type RefusalLog interface {
	Log(log *slog.Logger, level slog.Level, key, msg string, attrs ...slog.Attr)
}

// GateConfig configures a Gate.
type GateConfig struct {
	// Name names the source in log lines ("push", "rest").
	Name string
	// Authenticate verifies a caller's bearer token; nil accepts every call
	// (inbound authentication off).
	Authenticate func(token string) error
	// Log and Refusals write the lines about refused tasks.
	Log      *slog.Logger
	Refusals RefusalLog
}

// Pushed is one task as a push source received it. The gate reads it in
// order: the token (only when authentication is on), then the task.
type Pushed struct {
	// RunID and NodeID name the task in refusal log lines, as received.
	RunID, NodeID string
	// Token reads the caller's bearer token from the request.
	Token func() (string, error)
	// Task builds the task from the request; an error makes it a bad request.
	Task func() (domain.Task, error)
}

// Gate is the caller side of Intake for a push source, one the engine calls
// and that answers each task on the wire (the gRPC Execute server, the REST
// intake): it authenticates the call, builds the task, offers it as
// Refusable (the engine waits for the answer, so an invalid task is refused
// rather than answered with a result), classifies the outcome, and logs
// refusals of bad calls, throttled. Overload and draining are not logged:
// they are the normal back-pressure on the engine.
//
// The gate refuses tasks (Unavailable) until Attach and after Detach, which
// returns only once no Offer is in progress or can follow: what a TaskSource's
// Stop promises.
type Gate struct {
	cfg GateConfig

	// mu is held for reading from the moment a call reads intake until its
	// Offer returns, so that Detach, which takes it for writing, returns
	// only once no Offer is in progress or can follow.
	mu     sync.RWMutex
	intake Intake // nil before Attach and after Detach
}

// NewGate returns a gate that refuses tasks until Attach.
func NewGate(cfg GateConfig) *Gate { return &Gate{cfg: cfg} }

// Attach starts offering tasks to intake (TaskSource.Start).
func (g *Gate) Attach(intake Intake) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.intake = intake
}

// Detach stops offering tasks, waiting for an Offer in progress
// (TaskSource.Stop).
func (g *Gate) Detach() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.intake = nil
}

// Admit takes one pushed task through the gate. The error says why a task
// was not accepted, in words fit for the engine; it is nil when Accepted.
// An error from Offer that the Intake contract does not name is taken as
// transient (Unavailable, so that the engine tries again and loses nothing).
func (g *Gate) Admit(ctx context.Context, p Pushed) (Verdict, error) {
	if g.cfg.Authenticate != nil {
		token, err := p.Token()
		if err == nil {
			err = g.cfg.Authenticate(token)
		}
		if err != nil {
			g.refused("auth", "authentication failed", p, err)
			return Unauthenticated, err
		}
	}
	task, err := p.Task()
	if err != nil {
		g.refused("invalid", "invalid", p, err)
		return BadRequest, err
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.intake == nil {
		return Unavailable, errNotAttached
	}
	switch err := g.intake.Offer(ctx, Delivery{Task: &task, Refusable: true}); {
	case err == nil:
		return Accepted, nil
	case errors.Is(err, domain.ErrOverloaded), errors.Is(err, domain.ErrDraining):
		return Unavailable, err
	case errors.Is(err, domain.ErrInvalidTask):
		g.refused("invalid", "invalid", p, err)
		return BadRequest, err
	default:
		g.refused("failed", "the runtime failed", p, err)
		return Unavailable, err
	}
}

// refused logs a refusal, throttled per kind, with bounded ids.
func (g *Gate) refused(kind, why string, p Pushed, err error) {
	g.cfg.Refusals.Log(g.cfg.Log, slog.LevelWarn, kind, g.cfg.Name+" task refused: "+why,
		slog.String("run_id", domain.Clip(p.RunID, domain.QuoteBytes)),
		slog.String("node_id", domain.Clip(p.NodeID, domain.QuoteBytes)), slog.Any("error", err))
}
