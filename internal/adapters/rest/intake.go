package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// TaskPath is where the REST intake takes tasks; the registered endpoint is
// the intake's base URL followed by it.
const TaskPath = "/api/v1/tasks"

// IntakeConfig configures the REST task intake.
type IntakeConfig struct {
	// Address is the host:port to listen on; port 0 picks a free port.
	Address string
	// MaxBodyBytes bounds a request body (1 MiB if 0); a larger one is
	// refused with 400.
	MaxBodyBytes int64
	// Authenticate verifies the bearer token of a request; an error
	// refuses it with 401. Nil accepts every request.
	Authenticate func(token string) error
	// Executors are the executor types served over REST.
	Executors []domain.Registration
}

// Intake is the REST task intake: the endpoint Gamelan's REST dispatcher
// posts a task to, with the task in headers (X-Executor-Id, X-Run-Id,
// X-Node-Id, X-Attempt, X-Idempotency-Key, X-Signature), its trace context
// in the W3C headers (traceparent, tracestate, baggage) and an optional JSON
// body. It answers 202 when the task is accepted (the result goes through
// the configured ResultSink), 503 when the runtime is full, draining or not
// started, 400 when the request is malformed, too large or names an executor
// not hosted here, 401 when authentication fails. It listens from
// construction and refuses tasks until Start.
type Intake struct {
	cfg      IntakeConfig
	server   *http.Server
	listener net.Listener
	served   chan struct{}
	closing  sync.Once
	ids      map[string]bool
	types    map[string]string // executor type -> its executor id
	// gate authenticates, offers and classifies each task, and refuses them
	// before Start and after Stop.
	gate *ports.Gate
}

var _ ports.TaskSource = (*Intake)(nil)

// NewIntake listens on cfg.Address and starts serving.
func NewIntake(cfg IntakeConfig, log *slog.Logger) (*Intake, error) {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	listener, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("rest intake: listen on %s: %w", cfg.Address, err)
	}
	in := &Intake{cfg: cfg, listener: listener, served: make(chan struct{}), ids: map[string]bool{}, types: map[string]string{},
		gate: ports.NewGate(ports.GateConfig{Name: "rest", Authenticate: cfg.Authenticate, Log: log, Refusals: telemetry.NewThrottle(0, 0)})}
	for _, reg := range cfg.Executors {
		in.ids[reg.ExecutorID] = true
		in.types[reg.Descriptor.Type] = reg.ExecutorID
	}
	mux := http.NewServeMux()
	mux.Handle(TaskPath, in)
	in.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	go func() {
		defer close(in.served)
		if err := in.server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			log.Error("rest intake stopped", slog.Any("error", err))
		}
	}()
	log.Info("rest intake listening", slog.String("addr", listener.Addr().String()))
	return in, nil
}

// Addr is the address the intake listens on.
func (in *Intake) Addr() net.Addr { return in.listener.Addr() }

// Start implements ports.TaskSource: tasks are accepted from now on.
func (in *Intake) Start(ctx context.Context, intake ports.Intake) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start rest intake: %w", err)
	}
	in.gate.Attach(intake)
	return nil
}

// Stop implements ports.TaskSource: tasks are refused with 503 from now on,
// and no Offer follows its return (it waits for those in progress).
func (in *Intake) Stop(context.Context) error {
	in.gate.Detach()
	return nil
}

// Close implements ports.TaskSource: it stops the intake if it was not
// stopped, then shuts the server down, letting requests in progress finish
// until ctx ends and cutting them short then (returning ctx's cause). Posted
// tasks carry no Settle, so nothing else is held. Close is idempotent: a
// second call waits for the first to finish.
func (in *Intake) Close(ctx context.Context) error {
	_ = in.Stop(ctx)
	var err error
	in.closing.Do(func() {
		// Shutdown waits for requests in progress until its context ends,
		// which the hard stop does at once, then closes the connections left.
		shutdown, cancel := context.WithCancel(context.Background())
		defer cancel()
		err = ports.StopWithin(ctx, func() { _ = in.server.Shutdown(shutdown) }, func() { cancel(); _ = in.server.Close() })
	})
	<-in.served
	if err != nil {
		return fmt.Errorf("close rest intake: %w", err)
	}
	return nil
}

// answer is the JSON the intake answers with.
type answer struct {
	Accepted bool   `json:"accepted"`
	Message  string `json:"message"`
}

func reply(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(answer{Accepted: status == http.StatusAccepted, Message: message})
}

// ServeHTTP takes one task: the gate decides, and its verdict becomes an
// HTTP status.
func (in *Intake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, "POST a task")
		return
	}
	verdict, err := in.gate.Admit(r.Context(), ports.Pushed{
		RunID: r.Header.Get("X-Run-Id"), NodeID: r.Header.Get("X-Node-Id"),
		Token: func() (string, error) { return security.SingleBearerToken(r.Header.Values("Authorization")) },
		Task:  func() (domain.Task, error) { return in.parse(r) },
	})
	switch verdict {
	case ports.Accepted:
		reply(w, http.StatusAccepted, "accepted")
	case ports.Unauthenticated:
		reply(w, http.StatusUnauthorized, err.Error())
	case ports.BadRequest:
		reply(w, http.StatusBadRequest, err.Error())
	default:
		// A rate-limit refusal says when a token is free, in whole
		// seconds rounded up (the header has no finer unit); other
		// refusals suggest a second.
		retry := int64(1)
		if delay, limited := domain.RetryAfter(err); limited {
			retry = domain.RetryAfterSeconds(delay)
		}
		w.Header().Set("Retry-After", strconv.FormatInt(retry, 10))
		reply(w, http.StatusServiceUnavailable, err.Error())
	}
}

// taskBody is the optional JSON body: a TaskMessage-like object whose
// "context" holds the variables, or, without "context", the variables
// themselves. Its fields are read by read, by their exact names.
type taskBody struct {
	Context        map[string]any
	Configuration  map[string]any
	TaskID         string
	NodeName       string
	NodeType       string
	ExecutorType   string
	Token          string
	TimeoutSeconds int64
}

// read fills the body from the object's fields, each taken by its exact
// name: encoding/json alone would match names in any case and merge
// "context" and "CONTEXT" into one map. A field of the wrong type is named.
func (b *taskBody) read(fields map[string]json.RawMessage) error {
	for _, f := range []struct {
		name string
		dst  any
	}{
		{"context", &b.Context}, {"configuration", &b.Configuration}, {"taskId", &b.TaskID}, {"nodeName", &b.NodeName},
		{"nodeType", &b.NodeType}, {"executorType", &b.ExecutorType}, {"token", &b.Token}, {"timeoutSeconds", &b.TimeoutSeconds},
	} {
		if raw, ok := fields[f.name]; ok {
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return fmt.Errorf("body field %s: %s", f.name, jsonReason(err))
			}
		}
	}
	return nil
}

// jsonReason is a JSON error's text, bounded: encoding/json quotes a number
// it cannot store whole, and a body may be a megabyte of digits, while the
// answer is sent back and logged.
func jsonReason(err error) string { return domain.Clip(err.Error(), 256) }

// parse builds a task from the headers and the optional body.
func (in *Intake) parse(r *http.Request) (domain.Task, error) {
	task := domain.Task{
		RunID:          r.Header.Get("X-Run-Id"),
		NodeID:         r.Header.Get("X-Node-Id"),
		IdempotencyKey: r.Header.Get("X-Idempotency-Key"),
		Trace:          traceFromHeaders(r.Header),
	}
	if task.RunID == "" || task.NodeID == "" {
		return domain.Task{}, errors.New("X-Run-Id and X-Node-Id are required")
	}
	a := strings.TrimSpace(r.Header.Get("X-Attempt"))
	if a == "" {
		return domain.Task{}, errors.New("X-Attempt is required")
	}
	attempt, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return domain.Task{}, fmt.Errorf("X-Attempt %s is not a whole number", domain.Quote(a))
	}
	task.Attempt = int(attempt) // the runtime checks its range
	if id := r.Header.Get("X-Executor-Id"); id != "" {
		switch {
		case in.ids[id]:
			task.ExecutorID = id
		case in.types[id] != "":
			task.ExecutorID = in.types[id] // that type's executor: a routing hint
		default:
			return domain.Task{}, fmt.Errorf("X-Executor-Id %s names no executor hosted here", domain.Quote(id))
		}
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, in.cfg.MaxBodyBytes+1))
	if err != nil {
		return domain.Task{}, fmt.Errorf("read body: %w", err)
	}
	if int64(len(raw)) > in.cfg.MaxBodyBytes {
		return domain.Task{}, fmt.Errorf("body larger than %d bytes", in.cfg.MaxBodyBytes)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		task.Context = map[string]any{}
		return task, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return domain.Task{}, fmt.Errorf("body is not a JSON object: %s", jsonReason(err))
	}
	if fields == nil {
		return domain.Task{}, errors.New("body is not a JSON object: it is null")
	}
	if fields == nil { // JSON null decodes into a map without error
		return domain.Task{}, errors.New("body is not a JSON object: null")
	}
	if _, ok := fields["context"]; !ok {
		var vars map[string]any
		if err := json.Unmarshal(raw, &vars); err != nil { // a value Go cannot hold, such as 1e999
			return domain.Task{}, fmt.Errorf("body: %s", jsonReason(err))
		}
		task.Context = vars
		return task, nil
	}
	var body taskBody
	if err := body.read(fields); err != nil {
		return domain.Task{}, err
	}
	task.Context, task.Configuration = body.Context, body.Configuration
	task.TaskID, task.NodeName, task.NodeType, task.ExecutionToken = body.TaskID, body.NodeName, body.NodeType, body.Token
	task.ExecutorType = body.ExecutorType
	task.Timeout = domain.TimeoutFromSeconds(body.TimeoutSeconds)
	return task, nil
}

// traceFromHeaders reads a posted task's W3C trace context (see
// domain.TraceFromHeaders). The result goes back through the configured
// result sink, which carries it (ReportResults metadata for a call of one
// result, Kafka record headers).
func traceFromHeaders(h http.Header) *domain.TraceContext {
	return domain.TraceFromHeaders(h.Values)
}
