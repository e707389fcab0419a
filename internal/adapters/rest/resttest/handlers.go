package resttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/engine/restengine"
)

// executorsPath is the registry's collection (docs/protocol.md, section 5).
const executorsPath = restengine.ExecutorsPath

// maxBody bounds the body read of a request.
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
	// Then the registry's routes: authentication (WithAuth), then the
	// protocol's handling over store, where FailHeartbeats applies.
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

// routes returns the registry's request router: the protocol's routes
// (restengine.Registry over the Registry's store) and the lists.
func (r *Registry) routes() *http.ServeMux {
	mux := http.NewServeMux()
	registry := restengine.Registry{Store: store{r}, Verify: r.verify, Refused: func(*http.Request, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.refused++
		r.notifyLocked()
	}}
	registry.Handle(mux)
	mux.HandleFunc("GET "+executorsPath, registry.Authenticate(r.list))
	mux.HandleFunc("GET "+executorsPath+"/healthy", registry.Authenticate(r.healthy))
	return mux
}

// store is what the registry's protocol routes keep: the Registry's state.
type store struct{ r *Registry }

var _ restengine.Store = store{}

// Register stores info, counts the registration and names its executor in
// the request's record.
func (s store) Register(ctx context.Context, info ExecutorInfo) (any, error) {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if index, ok := ctx.Value(requestIndexKey{}).(int); ok {
		r.requests[index].ExecutorID = info.ExecutorID
	}
	r.executors[info.ExecutorID] = info.Clone()
	r.registerCalls[info.ExecutorID]++
	r.lastSeen[info.ExecutorID] = time.Now()
	r.notifyLocked()
	return info, nil
}

// Heartbeat answers FailHeartbeats' status when it is in force, records the
// heartbeat of a known executor, and refuses that of an unknown one unless
// GamelanMode (which answers success without recording it).
func (s store) Heartbeat(_ context.Context, id string) error {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failHeartbeats != 0 {
		return &restengine.StatusError{Status: r.failHeartbeats, Message: fmt.Sprintf("resttest: injected heartbeat answer %d", r.failHeartbeats)}
	}
	if _, known := r.executors[id]; !known {
		if r.gamelan {
			return nil
		}
		return restengine.ErrUnknownExecutor
	}
	now := time.Now()
	r.heartbeats[id] = append(r.heartbeats[id], now)
	r.lastSeen[id] = now
	r.notifyLocked()
	return nil
}

// Lookup answers the stored registration.
func (s store) Lookup(_ context.Context, id string) (any, bool) { return s.r.Executor(id) }

// Unregister removes the registration.
func (s store) Unregister(_ context.Context, id string) bool {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	_, known := r.executors[id]
	delete(r.executors, id)
	r.notifyLocked()
	return known
}

func (r *Registry) list(w http.ResponseWriter, _ *http.Request) {
	restengine.WriteJSON(w, http.StatusOK, r.Executors())
}

func (r *Registry) healthy(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	since := time.Now().Add(-r.healthyWithin)
	healthy := r.executorsLocked(func(id string) bool { return r.lastSeen[id].After(since) })
	r.mu.Unlock()
	restengine.WriteJSON(w, http.StatusOK, healthy)
}

// unescape returns the path segment s unescaped, or s when it is not valid.
func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
