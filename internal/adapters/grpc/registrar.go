package grpc

import (
	"context"
	"fmt"
	"strings"

	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
)

// Registrar registers executor types through the engine's ExecutorService.
type Registrar struct {
	client gamelanv1.ExecutorServiceClient
	watch  *ConnectionWatch
}

var (
	_ ports.Registrar           = (*Registrar)(nil)
	_ ports.RegistrationWatcher = (*Registrar)(nil)
)

// NewRegistrar returns a Registrar calling the engine through client.
func NewRegistrar(client gamelanv1.ExecutorServiceClient) *Registrar {
	return &Registrar{client: client}
}

// Watching makes the registrar report the watch's signs that the engine
// forgot the executors (a remade connection), so that the runtime
// registers them again. It returns r.
func (r *Registrar) Watching(watch *ConnectionWatch) *Registrar {
	r.watch = watch
	return r
}

// RegistrationSuspects implements ports.RegistrationWatcher: the watch's
// channel, or nil (never receiving) without a watch.
func (r *Registrar) RegistrationSuspects() <-chan string {
	if r.watch == nil {
		return nil
	}
	return r.watch.RegistrationSuspects()
}

// Register implements ports.Registrar with RegisterExecutor. An empty status
// (what the Gamelan engine answers) or "REGISTERED" means accepted; any other
// status is a refusal.
func (r *Registrar) Register(ctx context.Context, reg domain.Registration) error {
	ctx = security.WithSubject(ctx, reg.ExecutorID)
	answer, err := r.client.RegisterExecutor(ctx, registrationToProto(reg))
	if err != nil {
		return callError("register "+reg.ExecutorID, err)
	}
	if s := answer.GetStatus(); s != "" && !strings.EqualFold(s, "REGISTERED") {
		return fmt.Errorf("register %s: engine answered status %q", reg.ExecutorID, s)
	}
	return nil
}

// Unregister implements ports.Registrar with UnregisterExecutor; an engine
// that does not know the id (NotFound) is not an error.
func (r *Registrar) Unregister(ctx context.Context, executorID string) error {
	ctx = security.WithSubject(ctx, executorID)
	_, err := r.client.UnregisterExecutor(ctx, &gamelanv1.UnregisterExecutorRequest{ExecutorId: executorID})
	if err != nil {
		if err := callError("unregister "+executorID, err); !isNotRegistered(err) {
			return err
		}
	}
	return nil
}

// Heartbeater heartbeats through the engine's ExecutorService.
type Heartbeater struct {
	client gamelanv1.ExecutorServiceClient
}

var _ ports.Heartbeater = (*Heartbeater)(nil)

// NewHeartbeater returns a Heartbeater calling the engine through client.
func NewHeartbeater(client gamelanv1.ExecutorServiceClient) *Heartbeater {
	return &Heartbeater{client: client}
}

// Heartbeat implements ports.Heartbeater. A NotFound answer wraps
// domain.ErrNotRegistered.
func (h *Heartbeater) Heartbeat(ctx context.Context, hb domain.Heartbeat) error {
	ctx = security.WithSubject(ctx, hb.ExecutorID)
	if _, err := h.client.Heartbeat(ctx, heartbeatToProto(hb)); err != nil {
		return callError("heartbeat "+hb.ExecutorID, err)
	}
	return nil
}
