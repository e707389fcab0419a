package devengine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	engineapi "github.com/gamelan-go/executor/internal/adapters/rest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// HTTP is the engine's HTTP side: the task API, the REST executor registry
// (docs/protocol.md, section 5), and delivery to REST executors.
type HTTP struct {
	engine *Engine
	log    *slog.Logger
	// verify, when set, checks the bearer token of executor calls.
	verify func(token string) error
	// token, when set, mints the engine's token for REST deliveries.
	token  func() (string, error)
	client *http.Client
}

var (
	_ Deliverer = (*HTTP)(nil)
	_ Router    = (*HTTP)(nil)
)

// NewHTTP returns the engine's HTTP side. verify and token may be nil.
func NewHTTP(engine *Engine, verify func(string) error, token func() (string, error), log *slog.Logger) *HTTP {
	return &HTTP{engine: engine, log: log, verify: verify, token: token, client: &http.Client{Timeout: 10 * time.Second}}
}

// Handler serves the API and the registry.
//
//	POST   /api/v1/tasks                    submit {executorType|nodeType, nodeId, context, timeoutSeconds} -> task (400 when Engine.Submit refuses it)
//	GET    /api/v1/tasks/{id}               a task, its status and result (404 when unknown or forgotten)
//	POST   /api/v1/tasks/{id}/cancel        cancel a task (404 when unknown or forgotten, 409 when it cannot be cancelled)
//	GET    /api/v1/summary                  counts, failures by code, latency percentiles, of the tasks kept
//	POST   /api/v1/executors                register (ExecutorInfo)
//	GET    /api/v1/executors[/healthy]      executors with load and health (operator reads, open like the task API)
//	GET    /api/v1/executors/{id}           one executor (404 when unknown; an executor's own look-up, token required)
//	DELETE /api/v1/executors/{id}           unregister
//	POST   /api/v1/executors/{id}/heartbeat heartbeat (404 when unknown)
//
// The engine forgets the final tasks that finished first beyond
// Config.RetainFinished: the task API answers 404 for them, and the
// summary no longer counts them.
func (h *HTTP) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/tasks", h.submit)
	mux.HandleFunc("GET /api/v1/tasks/{id}", h.task)
	mux.HandleFunc("POST /api/v1/tasks/{id}/cancel", h.cancel)
	mux.HandleFunc("GET /api/v1/summary", h.summary)
	mux.HandleFunc("GET /api/v1/executors", h.executors(false))
	mux.HandleFunc("GET /api/v1/executors/healthy", h.executors(true))
	mux.HandleFunc("GET /api/v1/executors/{id}", h.authenticated(h.executor))
	mux.HandleFunc("POST /api/v1/executors", h.authenticated(h.register))
	mux.HandleFunc("DELETE /api/v1/executors/{id}", h.authenticated(h.unregister))
	mux.HandleFunc("POST /api/v1/executors/{id}/heartbeat", h.authenticated(h.heartbeat))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "UP"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// authenticated refuses executor calls without a valid token (when tokens
// are on) with 401, and counts them.
func (h *HTTP) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.verify != nil {
			token, err := security.BearerToken(r.Header.Get("Authorization"))
			if err == nil {
				err = h.verify(token)
			}
			if err != nil {
				h.engine.Refused()
				h.log.Warn("executor call refused", slog.String("path", r.URL.Path), slog.Any("error", err))
				writeError(w, http.StatusUnauthorized, err)
				return
			}
		}
		next(w, r)
	}
}

func (h *HTTP) submit(w http.ResponseWriter, r *http.Request) {
	var spec TaskSpec
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&spec); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
		return
	}
	t, err := h.engine.Submit(spec)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	answer := submitted{Task: t}
	if !h.engine.CanServe(spec) {
		// Accepted (an executor may register later), but flagged, so that
		// a mistyped type does not sit PENDING without a word.
		answer.Warning = fmt.Sprintf("no registered executor serves %s: the task stays PENDING until one registers",
			describeSpec(spec))
	}
	writeJSON(w, http.StatusCreated, answer)
}

// submitted is the answer to a submitted task: the task, and a warning when
// no registered executor can take it yet.
type submitted struct {
	Task
	Warning string `json:"warning,omitempty"`
}

// describeSpec names what a task spec asks for.
func describeSpec(spec TaskSpec) string {
	if spec.ExecutorType != "" {
		return fmt.Sprintf("executor type %q", spec.ExecutorType)
	}
	return fmt.Sprintf("node type %q", spec.NodeType)
}

func (h *HTTP) task(w http.ResponseWriter, r *http.Request) {
	t, ok := h.engine.Task(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no task %s", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (h *HTTP) cancel(w http.ResponseWriter, r *http.Request) {
	ok, err := h.engine.Cancel(r.PathValue("id"), "cancelled through the API")
	switch {
	case errors.Is(err, ErrNoTask):
		writeError(w, http.StatusNotFound, err)
		return
	case err != nil:
		writeError(w, http.StatusConflict, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"cancelled": ok})
}

func (h *HTTP) summary(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, Summarize(h.engine.Tasks(), h.engine.Counters()))
}

func (h *HTTP) executors(healthyOnly bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		list := h.engine.Executors()
		if healthyOnly {
			healthy := list[:0]
			for _, e := range list {
				if e.Healthy {
					healthy = append(healthy, e)
				}
			}
			list = healthy
		}
		writeJSON(w, http.StatusOK, list)
	}
}

func (h *HTTP) executor(w http.ResponseWriter, r *http.Request) {
	e, ok := h.engine.Executor(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("executor %s is not registered", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (h *HTTP) register(w http.ResponseWriter, r *http.Request) {
	var info engineapi.ExecutorInfo
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&info); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
		return
	}
	if info.ExecutorID == "" || info.ExecutorType == "" {
		writeError(w, http.StatusBadRequest, errors.New("executorId and executorType are required"))
		return
	}
	maxConcurrent, _ := strconv.Atoi(info.Metadata[engineapi.MetadataMaxConcurrentTasks])
	var supported []string
	if s := info.Metadata[engineapi.MetadataSupportedNodeTypes]; s != "" {
		supported = strings.Split(s, ",")
	}
	h.engine.Register(Executor{
		ID: info.ExecutorID, Type: info.ExecutorType, CommunicationType: strings.ToUpper(info.CommunicationType),
		Endpoint: info.Endpoint, SupportedNodeTypes: supported, MaxConcurrent: maxConcurrent,
		Metadata: info.Metadata, Via: "http",
	})
	e, _ := h.engine.Executor(info.ExecutorID)
	writeJSON(w, http.StatusOK, e)
}

func (h *HTTP) unregister(w http.ResponseWriter, r *http.Request) {
	if !h.engine.Unregister(r.PathValue("id")) {
		writeError(w, http.StatusNotFound, fmt.Errorf("executor %s is not registered", r.PathValue("id")))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *HTTP) heartbeat(w http.ResponseWriter, r *http.Request) {
	// The REST heartbeat has no body: neither load nor status.
	if err := h.engine.Heartbeat(domain.Heartbeat{ExecutorID: r.PathValue("id")}); err != nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("executor %s: %w", r.PathValue("id"), err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Route implements Router.
func (h *HTTP) Route(Executor) string { return "rest" }

// Deliver implements Deliverer for REST executors: a POST to the endpoint
// with the task in headers and a JSON body, the way Gamelan's REST
// dispatcher would (with a body that serializes).
func (h *HTTP) Deliver(ctx context.Context, to Executor, task domain.Task) (string, error) {
	body, err := json.Marshal(map[string]any{"context": task.Context, "taskId": task.TaskID, "nodeType": task.NodeType,
		"token": task.ExecutionToken, "timeoutSeconds": int64(task.Timeout / time.Second)})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, to.Endpoint, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("rest delivery to %s: %w", to.Endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Executor-Id", to.ID)
	req.Header.Set("X-Run-Id", task.RunID)
	req.Header.Set("X-Node-Id", task.NodeID)
	req.Header.Set("X-Attempt", strconv.Itoa(task.Attempt))
	req.Header.Set("X-Idempotency-Key", task.Key())
	req.Header.Set("X-Signature", signature(task.RunID, to.ID))
	if h.token != nil {
		token, err := h.token()
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("rest delivery to %s: %w", to.Endpoint, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("rest delivery to %s: %d %s", to.Endpoint, resp.StatusCode, strings.TrimSpace(string(answer)))
	}
	return "rest", nil
}
