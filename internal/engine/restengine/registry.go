package restengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
)

// ExecutorInfo is an executor as the engine's registry knows it
// (docs/protocol.md, section 5.1).
type ExecutorInfo struct {
	ExecutorID        string            `json:"executorId"`
	ExecutorType      string            `json:"executorType"`
	CommunicationType string            `json:"communicationType"`
	Endpoint          string            `json:"endpoint"`
	Timeout           int64             `json:"timeout"`
	Metadata          map[string]string `json:"metadata"`
}

// Clone returns a copy of info that shares nothing with it.
func (info ExecutorInfo) Clone() ExecutorInfo {
	info.Metadata = maps.Clone(info.Metadata)
	return info
}

// The metadata keys an executor adds to its registration beside name,
// version and host.
const (
	MetadataSupportedNodeTypes = "supportedNodeTypes" // comma-separated
	MetadataMaxConcurrentTasks = "maxConcurrentTasks" // decimal
)

// ExecutorsPath is the registry's collection: register, and the
// executors' own routes below it.
const ExecutorsPath = "/api/v1/executors"

// communicationTypes are the communicationType values the registry takes.
var communicationTypes = map[string]bool{"GRPC": true, "KAFKA": true, "REST": true, "LOCAL": true}

// maxBody bounds a registration's body.
const maxBody = 1 << 20

// ErrUnknownExecutor is what a Store returns for a heartbeat of an
// executor it does not know: 404, which tells the executor to register
// again.
var ErrUnknownExecutor = errors.New("executor not registered")

// StatusError is a Store's error that answers Status.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// Store is what the registry keeps: the engine's executors. ctx is the
// request's.
type Store interface {
	// Register stores a valid registration, replacing an earlier one of the
	// same executor, and returns what to answer.
	Register(ctx context.Context, info ExecutorInfo) (answer any, err error)
	// Heartbeat records a heartbeat (which carries no body).
	Heartbeat(ctx context.Context, executorID string) error
	// Lookup returns what to answer about an executor, false when unknown.
	Lookup(ctx context.Context, executorID string) (answer any, ok bool)
	// Unregister removes an executor and reports whether it was known.
	Unregister(ctx context.Context, executorID string) bool
}

// Registry serves the engine's REST executor registry over a Store.
type Registry struct {
	Store Store
	// Verify, when set, checks the bearer token of every registry call
	// (empty when the request has none or not as a bearer token): an error
	// answers 401.
	Verify func(token string) error
	// Refused, when set, is told of every call Verify refused.
	Refused func(r *http.Request, err error)
}

// Handle adds the registry's routes to mux.
func (g Registry) Handle(mux *http.ServeMux) {
	mux.HandleFunc("POST "+ExecutorsPath, g.Authenticate(g.register))
	mux.HandleFunc("GET "+ExecutorsPath+"/{id}", g.Authenticate(g.lookup))
	mux.HandleFunc("DELETE "+ExecutorsPath+"/{id}", g.Authenticate(g.unregister))
	mux.HandleFunc("POST "+ExecutorsPath+"/{id}/heartbeat", g.Authenticate(g.heartbeat))
}

// Authenticate refuses a request whose bearer token Verify refuses with
// 401; without Verify it lets every request through.
func (g Registry) Authenticate(next http.HandlerFunc) http.HandlerFunc {
	if g.Verify == nil {
		return next
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if err := g.Verify(bearerToken(r.Header.Get("Authorization"))); err != nil {
			if g.Refused != nil {
				g.Refused(r, err)
			}
			WriteError(w, http.StatusUnauthorized, "unauthenticated: %v", err)
			return
		}
		next(w, r)
	}
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header (the scheme in any case), or "".
func bearerToken(authorization string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

func (g Registry) register(w http.ResponseWriter, r *http.Request) {
	var info ExecutorInfo
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&info); err != nil {
		WriteError(w, http.StatusBadRequest, "executor info: %v", err)
		return
	}
	switch {
	case info.ExecutorID == "" || info.ExecutorType == "":
		WriteError(w, http.StatusBadRequest, "executor info: executorId and executorType are required")
		return
	case !communicationTypes[info.CommunicationType]:
		WriteError(w, http.StatusBadRequest, "executor info: communicationType %q is not GRPC, KAFKA, REST or LOCAL", info.CommunicationType)
		return
	}
	answer, err := g.Store.Register(r.Context(), info)
	if err != nil {
		writeStoreError(w, http.StatusBadRequest, err)
		return
	}
	WriteJSON(w, http.StatusOK, answer)
}

func (g Registry) heartbeat(w http.ResponseWriter, r *http.Request) {
	if err := g.Store.Heartbeat(r.Context(), r.PathValue("id")); err != nil {
		writeStoreError(w, http.StatusInternalServerError, fmt.Errorf("executor %q: %w", r.PathValue("id"), err))
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (g Registry) lookup(w http.ResponseWriter, r *http.Request) {
	answer, ok := g.Store.Lookup(r.Context(), r.PathValue("id"))
	if !ok {
		WriteError(w, http.StatusNotFound, "executor %q is not registered", r.PathValue("id"))
		return
	}
	WriteJSON(w, http.StatusOK, answer)
}

func (g Registry) unregister(w http.ResponseWriter, r *http.Request) {
	if !g.Store.Unregister(r.Context(), r.PathValue("id")) {
		WriteError(w, http.StatusNotFound, "executor %q is not registered", r.PathValue("id"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeStoreError answers a Store's error: its own status, 404 for an
// unknown executor, else status.
func writeStoreError(w http.ResponseWriter, status int, err error) {
	var statusErr *StatusError
	switch {
	case errors.As(err, &statusErr):
		status = statusErr.Status
	case errors.Is(err, ErrUnknownExecutor):
		status = http.StatusNotFound
	}
	WriteError(w, status, "%v", err)
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers status with {"error": message}.
func WriteError(w http.ResponseWriter, status int, format string, args ...any) {
	WriteJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}
