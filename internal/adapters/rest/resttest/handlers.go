package resttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The routes of the registry (docs/protocol.md, section 5).
const (
	executorsPath = "/api/v1/executors"
	heartbeatPath = "/heartbeat"
)

// communicationTypes are the communicationType values the registry takes.
var communicationTypes = map[string]bool{"GRPC": true, "KAFKA": true, "REST": true, "LOCAL": true}

// maxBody bounds a registration's body.
const maxBody = 1 << 20

// requestIndexKey carries the index of a request's record to the routes.
type requestIndexKey struct{}

// statusRecorder remembers the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// handle records the request, applies the faults in force in the order the
// package documentation gives, then routes it. stopping is the channel of
// the server generation that received the request.
func (r *Registry) handle(w http.ResponseWriter, req *http.Request, stopping chan struct{}) {
	r.mu.Lock()
	select {
	case <-stopping:
		// Dispatched by a connection Stop is closing: nothing is recorded
		// or answered after Stop. The abort closes the connection without
		// the answer net/http would otherwise send.
		r.mu.Unlock()
		panic(http.ErrAbortHandler)
	default:
	}
	r.active++
	index := len(r.requests)
	r.requests = append(r.requests, Request{
		Method:        req.Method,
		Path:          req.URL.EscapedPath(),
		ExecutorID:    executorIDOf(req.URL.EscapedPath()),
		Authorization: req.Header.Get("Authorization"),
		Time:          time.Now(),
	})
	hang := r.hang
	r.notifyLocked()
	r.mu.Unlock()

	rec := &statusRecorder{ResponseWriter: w}
	defer func() { r.end(index, rec.status) }()

	// The body is read first: the server notices a client that gives up
	// (and cancels the request's context) only once the body is consumed.
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBody))
	if err != nil {
		return // the client went away mid-body
	}
	req.Body = io.NopCloser(bytes.NewReader(body))

	if hang > 0 {
		timer := time.NewTimer(hang)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-req.Context().Done():
			return // the client gave up
		case <-stopping:
			panic(http.ErrAbortHandler) // unanswered, as from an engine that went away
		}
	}
	if status, body, ok := r.takeFailure(); ok {
		rec.Header().Set("Content-Type", "application/json")
		rec.WriteHeader(status)
		_, _ = io.WriteString(rec, body)
		return
	}
	if r.verify != nil {
		if err := r.verify(bearerToken(req.Header.Get("Authorization"))); err != nil {
			r.mu.Lock()
			r.refused++
			r.notifyLocked()
			r.mu.Unlock()
			writeError(rec, http.StatusUnauthorized, "unauthenticated: %v", err)
			return
		}
	}
	if status := r.heartbeatFault(req); status != 0 {
		writeError(rec, status, "resttest: injected heartbeat answer %d", status)
		return
	}
	r.mux.ServeHTTP(rec, req.WithContext(context.WithValue(req.Context(), requestIndexKey{}, index)))
}

// end completes the record of request index with the status answered.
func (r *Registry) end(index, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[index].Ended = time.Now()
	r.requests[index].Status = status
	r.active--
	r.notifyLocked()
}

// takeFailure consumes one FailNext answer, if any is left.
func (r *Registry) takeFailure() (status int, body string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failNext == 0 {
		return 0, "", false
	}
	r.failNext--
	return r.failStatus, r.failBody, true
}

// heartbeatFault returns the status FailHeartbeats imposes on req, or 0.
func (r *Registry) heartbeatFault(req *http.Request) int {
	if req.Method != http.MethodPost || !strings.HasPrefix(req.URL.Path, executorsPath+"/") || !strings.HasSuffix(req.URL.Path, heartbeatPath) {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failHeartbeats
}

// executorIDOf returns the {id} segment, unescaped, of an escaped registry
// path, or "".
func executorIDOf(path string) string {
	rest, ok := strings.CutPrefix(path, executorsPath+"/")
	if !ok {
		return ""
	}
	id, tail, _ := strings.Cut(rest, "/")
	if id == "healthy" && tail == "" {
		return ""
	}
	return unescape(id)
}

// routes returns the registry's request router.
func (r *Registry) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+executorsPath, r.register)
	mux.HandleFunc("GET "+executorsPath, r.list)
	mux.HandleFunc("GET "+executorsPath+"/healthy", r.healthy)
	mux.HandleFunc("GET "+executorsPath+"/{id}", r.get)
	mux.HandleFunc("DELETE "+executorsPath+"/{id}", r.unregister)
	mux.HandleFunc("POST "+executorsPath+"/{id}"+heartbeatPath, r.heartbeat)
	return mux
}

func (r *Registry) register(w http.ResponseWriter, req *http.Request) {
	var info ExecutorInfo
	if err := json.NewDecoder(req.Body).Decode(&info); err != nil {
		writeError(w, http.StatusBadRequest, "executor info: %v", err)
		return
	}
	switch {
	case info.ExecutorID == "":
		writeError(w, http.StatusBadRequest, "executor info: executorId is required")
		return
	case !communicationTypes[info.CommunicationType]:
		writeError(w, http.StatusBadRequest, "executor info: communicationType %q is not GRPC, KAFKA, REST or LOCAL", info.CommunicationType)
		return
	}
	r.mu.Lock()
	if index, ok := req.Context().Value(requestIndexKey{}).(int); ok {
		r.requests[index].ExecutorID = info.ExecutorID
	}
	r.executors[info.ExecutorID] = info.clone()
	r.registerCalls[info.ExecutorID]++
	r.lastSeen[info.ExecutorID] = time.Now()
	r.notifyLocked()
	r.mu.Unlock()
	writeJSON(w, http.StatusOK, info)
}

func (r *Registry) heartbeat(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	r.mu.Lock()
	_, known := r.executors[id]
	if known {
		now := time.Now()
		r.heartbeats[id] = append(r.heartbeats[id], now)
		r.lastSeen[id] = now
		r.notifyLocked()
	}
	r.mu.Unlock()
	if !known && !r.gamelan {
		writeError(w, http.StatusNotFound, "executor %q is not registered", id)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (r *Registry) unregister(w http.ResponseWriter, req *http.Request) {
	id := req.PathValue("id")
	r.mu.Lock()
	_, known := r.executors[id]
	delete(r.executors, id)
	r.notifyLocked()
	r.mu.Unlock()
	if !known {
		writeError(w, http.StatusNotFound, "executor %q is not registered", id)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *Registry) get(w http.ResponseWriter, req *http.Request) {
	info, ok := r.Executor(req.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "executor %q is not registered", req.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (r *Registry) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, r.Executors())
}

func (r *Registry) healthy(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	since := time.Now().Add(-r.healthyWithin)
	healthy := r.executorsLocked(func(id string) bool { return r.lastSeen[id].After(since) })
	r.mu.Unlock()
	writeJSON(w, http.StatusOK, healthy)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// unescape returns the path segment s unescaped, or s when it is not valid.
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
