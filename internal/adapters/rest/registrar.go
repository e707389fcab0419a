package rest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// ExecutorInfo is the engine registry's view of an executor
// (docs/protocol.md, section 5.1).
type ExecutorInfo struct {
	ExecutorID        string            `json:"executorId"`
	ExecutorType      string            `json:"executorType"`
	CommunicationType string            `json:"communicationType"`
	Endpoint          string            `json:"endpoint"`
	Timeout           int64             `json:"timeout"`
	Metadata          map[string]string `json:"metadata"`
}

// Metadata keys this adapter adds to the registration's own metadata.
const (
	MetadataSupportedNodeTypes = "supportedNodeTypes" // comma-separated
	MetadataMaxConcurrentTasks = "maxConcurrentTasks"
)

// Registrar registers executor types in the engine's REST registry.
type Registrar struct {
	client *Client
	// taskTimeout is sent as the executor's timeout, in seconds.
	taskTimeout time.Duration
}

var _ ports.Registrar = (*Registrar)(nil)

// NewRegistrar returns a Registrar; taskTimeout is what the engine is told
// a task may take.
func NewRegistrar(client *Client, taskTimeout time.Duration) *Registrar {
	return &Registrar{client: client, taskTimeout: taskTimeout}
}

// Info is the ExecutorInfo sent for a registration.
func (r *Registrar) Info(reg domain.Registration) ExecutorInfo {
	metadata := make(map[string]string, len(reg.Metadata)+2)
	for k, v := range reg.Metadata {
		metadata[k] = v
	}
	metadata[MetadataSupportedNodeTypes] = strings.Join(reg.Descriptor.SupportedNodeTypes, ",")
	metadata[MetadataMaxConcurrentTasks] = strconv.Itoa(reg.Descriptor.MaxConcurrentTasks)
	if _, ok := metadata["version"]; !ok {
		metadata["version"] = reg.Descriptor.Version
	}
	return ExecutorInfo{
		ExecutorID:        reg.ExecutorID,
		ExecutorType:      reg.Descriptor.Type,
		CommunicationType: string(reg.CommunicationType),
		Endpoint:          reg.Endpoint,
		Timeout:           int64(r.taskTimeout / time.Second),
		Metadata:          metadata,
	}
}

// Register implements ports.Registrar with POST /api/v1/executors.
// Registering an id again replaces its entry: the call is idempotent.
func (r *Registrar) Register(ctx context.Context, reg domain.Registration) error {
	if err := r.client.do(ctx, http.MethodPost, "/api/v1/executors", reg.ExecutorID, r.Info(reg), nil); err != nil {
		return fmt.Errorf("register %s: %w", reg.ExecutorID, err)
	}
	return nil
}

// Unregister implements ports.Registrar with DELETE /api/v1/executors/{id};
// an id the engine does not know (404) is not an error.
func (r *Registrar) Unregister(ctx context.Context, executorID string) error {
	err := r.client.do(ctx, http.MethodDelete, "/api/v1/executors/"+url.PathEscape(executorID), executorID, nil, nil)
	if err != nil && statusOf(err) != http.StatusNotFound {
		return fmt.Errorf("unregister %s: %w", executorID, err)
	}
	return nil
}

// Heartbeater heartbeats through the engine's REST registry. Because an
// engine may answer success to a heartbeat from an executor it forgot
// (Gamelan does), a successful heartbeat is followed by a lookup of the
// executor: a 404 or 410 on either call, or a look-up answering nothing
// (an empty body, null, {}) or another executor, means "forgotten", and the
// runtime re-registers.
type Heartbeater struct {
	client *Client
}

var _ ports.Heartbeater = (*Heartbeater)(nil)

// NewHeartbeater returns a Heartbeater using client.
func NewHeartbeater(client *Client) *Heartbeater { return &Heartbeater{client: client} }

// Heartbeat implements ports.Heartbeater with POST
// /api/v1/executors/{id}/heartbeat (no body), then GET /api/v1/executors/{id}.
func (h *Heartbeater) Heartbeat(ctx context.Context, hb domain.Heartbeat) error {
	path := "/api/v1/executors/" + url.PathEscape(hb.ExecutorID)
	if err := h.client.do(ctx, http.MethodPost, path+"/heartbeat", hb.ExecutorID, nil, nil); err != nil {
		return forgotten("heartbeat "+hb.ExecutorID, err)
	}
	var info *ExecutorInfo
	if err := h.client.do(ctx, http.MethodGet, path, hb.ExecutorID, nil, &info); err != nil {
		if errors.Is(err, io.EOF) {
			// An empty answer: the engine has nothing to say about the executor.
			return fmt.Errorf("look up %s: the engine answered nothing: %w", hb.ExecutorID, domain.ErrNotRegistered)
		}
		return forgotten("look up "+hb.ExecutorID, err)
	}
	if info == nil || info.ExecutorID != hb.ExecutorID {
		// An empty answer (null, {}) or another executor: the engine does
		// not know this one, though it answered the heartbeat.
		got := ""
		if info != nil {
			got = info.ExecutorID
		}
		return fmt.Errorf("look up %s: the engine answered executor %s: %w", hb.ExecutorID, domain.Quote(got), domain.ErrNotRegistered)
	}
	return nil
}

// forgotten wraps err with domain.ErrNotRegistered when the engine said it
// does not know the executor.
func forgotten(op string, err error) error {
	switch statusOf(err) {
	case http.StatusNotFound, http.StatusGone:
		return fmt.Errorf("%s: %w: %w", op, domain.ErrNotRegistered, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
