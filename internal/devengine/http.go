package devengine

import (
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

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	"github.com/gamelan-go/executor/internal/engine/restengine"
)

// HTTP is the engine's HTTP side: the task API, the REST executor registry
// (docs/protocol.md, section 5, served by restengine.Registry over the
// Engine), and delivery to REST executors (restengine.PostTask).
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
//	POST   /api/v1/executors                register (ExecutorInfo) -> the executor
//	GET    /api/v1/executors[/healthy]      executors with load and health (operator reads, open like the task API)
//	GET    /api/v1/executors/{id}           one executor (404 when unknown; an executor's own look-up)
//	DELETE /api/v1/executors/{id}           unregister (204, 404 when unknown)
//	POST   /api/v1/executors/{id}/heartbeat heartbeat (200, 404 when unknown)
//
// The executors' calls (register, look-up, unregister, heartbeat) need a
// valid token when tokens are on; refusals are counted.
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
	restengine.Registry{Store: registryStore{h.engine}, Verify: h.verify, Refused: h.refused}.Handle(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "UP"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) { restengine.WriteJSON(w, status, v) }

func writeError(w http.ResponseWriter, status int, err error) {
	restengine.WriteError(w, status, "%v", err)
}

// refused counts and logs an executor call refused for its token.
func (h *HTTP) refused(r *http.Request, err error) {
	h.engine.Refused()
	h.log.Warn("executor call refused", slog.String("path", r.URL.Path), slog.Any("error", err))
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

// registryStore is the REST registry's store: the Engine's registry.
type registryStore struct{ engine *Engine }

var _ restengine.Store = registryStore{}

// Register registers the executor and answers the engine's view of it.
func (s registryStore) Register(_ context.Context, info restengine.ExecutorInfo) (any, error) {
	maxConcurrent, _ := strconv.Atoi(info.Metadata[restengine.MetadataMaxConcurrentTasks])
	var supported []string
	if types := info.Metadata[restengine.MetadataSupportedNodeTypes]; types != "" {
		supported = strings.Split(types, ",")
	}
	s.engine.Register(Executor{
		ID: info.ExecutorID, Type: info.ExecutorType, CommunicationType: info.CommunicationType,
		Endpoint: info.Endpoint, SupportedNodeTypes: supported, MaxConcurrent: maxConcurrent,
		Metadata: info.Metadata, Via: "http",
	})
	e, _ := s.engine.Executor(info.ExecutorID)
	return e, nil
}

// Heartbeat records a heartbeat, which has no body: neither load nor status.
func (s registryStore) Heartbeat(_ context.Context, executorID string) error {
	if err := s.engine.Heartbeat(domain.Heartbeat{ExecutorID: executorID}); err != nil {
		return restengine.ErrUnknownExecutor
	}
	return nil
}

// Lookup answers the engine's view of the executor.
func (s registryStore) Lookup(_ context.Context, executorID string) (any, bool) {
	return s.engine.Executor(executorID)
}

// Unregister unregisters the executor.
func (s registryStore) Unregister(_ context.Context, executorID string) bool {
	return s.engine.Unregister(executorID)
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
	post := restengine.TaskPost{ExecutorID: to.ID, RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt,
		IdempotencyKey: task.Key(), Signature: grpcengine.Signature(task.RunID, to.ID), Body: body}
	for key, value := range traceHeaders(task.Trace) {
		if post.Header == nil {
			post.Header = http.Header{}
		}
		post.Header.Set(key, value)
	}
	if h.token != nil {
		if post.Token, err = h.token(); err != nil {
			return "", err
		}
	}
	answer, err := restengine.PostTask(ctx, h.client, to.Endpoint, post)
	if err != nil {
		return "", fmt.Errorf("rest delivery to %s: %w", to.Endpoint, err)
	}
	if answer.Status != http.StatusAccepted {
		return "", fmt.Errorf("rest delivery to %s: %d %s", to.Endpoint, answer.Status, strings.TrimSpace(answer.Body[:min(len(answer.Body), 512)]))
	}
	return "rest", nil
}
