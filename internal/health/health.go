// Package health serves the service's liveness and readiness probes on
// /q/health/live, /q/health/ready and /q/health, answering SmallRye-style
// JSON as Quarkus services do:
//
//	{"status":"DOWN","checks":[{"name":"intake","status":"DOWN","data":{"error":"not connected"}},{"name":"runtime","status":"UP"}]}
//
// The status code is 200 when the status is UP and 503 when it is DOWN; the
// checks are sorted by name. /q/health/live evaluates the liveness checks,
// /q/health/ready the readiness and the liveness checks (a process that
// should be restarted is not ready either), and /q/health the same set as
// /q/health/ready. Only GET and HEAD are answered; other methods get 405.
//
// The checks are registered with and evaluated by
// github.com/heptiolabs/healthcheck, each wrapped in its Timeout so that a
// hung check is reported DOWN instead of hanging the probe. Checks run one
// after another, so a probe answers within the number of checks times the
// check timeout; keep both small enough for the orchestrator's probe timeout.
//
// An error's text is shown verbatim to whoever can reach the HTTP port:
// checks must never put secrets, tokens or credentials into their errors.
package health

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heptiolabs/healthcheck"
)

// Paths of the probes mounted by Register.
const (
	LivePath   = "/q/health/live"
	ReadyPath  = "/q/health/ready"
	HealthPath = "/q/health"
)

// Statuses of a Response and of each of its checks.
const (
	StatusUp   = "UP"
	StatusDown = "DOWN"
)

// DefaultCheckTimeout bounds each check when New is given no positive timeout.
const DefaultCheckTimeout = time.Second

// healthyText is what heptiolabs/healthcheck reports for a check that passed.
const healthyText = "OK"

// Response is the JSON body of every probe.
type Response struct {
	// Status is StatusUp when every check evaluated passed, else StatusDown.
	Status string `json:"status"`
	// Checks holds one entry per check evaluated, sorted by name; it is
	// empty, never null, when there are no checks.
	Checks []CheckResponse `json:"checks"`
}

// CheckResponse is the outcome of one check.
type CheckResponse struct {
	// Name is the name the check was registered under.
	Name string `json:"name"`
	// Status is StatusUp or StatusDown.
	Status string `json:"status"`
	// Data holds "error", the text of the check's error, when it is DOWN.
	Data map[string]string `json:"data,omitempty"`
}

// Probes holds the liveness and readiness checks of one process and serves
// them over HTTP. Its methods are safe for concurrent use, also while probes
// are being answered.
type Probes struct {
	checks       healthcheck.Handler
	checkTimeout time.Duration
}

// New returns Probes with no checks, which answer UP. Each check is given at
// most checkTimeout (DefaultCheckTimeout if not positive) before it is
// reported DOWN with a "timed out" error; a check that overruns keeps running
// in its own goroutine until it returns, so checks should still bound their
// own work.
func New(checkTimeout time.Duration) *Probes {
	if checkTimeout <= 0 {
		checkTimeout = DefaultCheckTimeout
	}
	return &Probes{checks: healthcheck.NewHandler(), checkTimeout: checkTimeout}
}

// AddLiveness registers a check that fails when this process is broken and
// should be restarted, not when a dependency is unavailable. It is evaluated
// by all three probes. A nil error means UP; an error means DOWN with its text
// shown, so it must not contain secrets. A panic is reported as DOWN.
// Registering a name again replaces the earlier check of the same kind. Names
// must be unique across liveness and readiness checks, because /q/health/ready
// reports both in one list.
func (p *Probes) AddLiveness(name string, check func() error) {
	p.checks.AddLivenessCheck(name, p.bounded(check))
}

// AddReadiness registers a check that fails while this process should not be
// sent work (not registered, intake not connected, draining). It is evaluated
// by /q/health/ready and /q/health. The rules of AddLiveness about errors,
// panics and names apply.
func (p *Probes) AddReadiness(name string, check func() error) {
	p.checks.AddReadinessCheck(name, p.bounded(check))
}

// Register mounts the three probes on mux at LivePath, ReadyPath and
// HealthPath. It panics, as http.ServeMux does, if one of the paths is already
// registered on mux.
func (p *Probes) Register(mux *http.ServeMux) {
	mux.Handle(LivePath, p.probe(p.checks.LiveEndpoint))
	mux.Handle(ReadyPath, p.probe(p.checks.ReadyEndpoint))
	mux.Handle(HealthPath, p.probe(p.checks.ReadyEndpoint))
}

// bounded wraps a check in healthcheck.Timeout and makes every failure,
// panics included, an error whose text cannot be mistaken for success.
func (p *Probes) bounded(check func() error) healthcheck.Check {
	return healthcheck.Timeout(func() (err error) {
		defer func() {
			if recovered := recover(); recovered != nil {
				err = fmt.Errorf("check panicked: %v", recovered)
			}
		}()
		if err := check(); err != nil {
			if text := err.Error(); text == "" || text == healthyText {
				return fmt.Errorf("check failed with error text %q", text)
			}
			return err
		}
		return nil
	}, p.checkTimeout)
}

// probe serves one probe whose checks evaluate runs: it asks heptiolabs for
// the full per-check outcome and renders it as a Response.
func (p *Probes) probe(evaluate http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		response := evaluateChecks(r, evaluate)
		body, err := json.Marshal(response)
		if err != nil {
			http.Error(w, "encode health response: "+err.Error(), http.StatusInternalServerError)
			return
		}
		status := http.StatusOK
		if response.Status != StatusUp {
			status = http.StatusServiceUnavailable
		}
		header := w.Header()
		header.Set("Content-Type", "application/json")
		header.Set("Cache-Control", "no-store")
		header.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	})
}

// evaluateChecks runs heptiolabs' endpoint with ?full=1 into memory and turns
// its name -> "OK" or error text map into a Response.
func evaluateChecks(r *http.Request, evaluate http.HandlerFunc) Response {
	inner, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/?full=1", nil)
	if err != nil {
		return failure(fmt.Errorf("build check request: %w", err))
	}
	recorded := &recordedResponse{header: make(http.Header)}
	evaluate(recorded, inner)

	var outcomes map[string]string
	if err := json.Unmarshal(recorded.body.Bytes(), &outcomes); err != nil {
		return failure(fmt.Errorf("decode check outcomes: %w", err))
	}
	response := Response{Status: StatusUp, Checks: make([]CheckResponse, 0, len(outcomes))}
	if recorded.status != http.StatusOK {
		response.Status = StatusDown
	}
	for name, outcome := range outcomes {
		check := CheckResponse{Name: name, Status: StatusUp}
		if outcome != healthyText {
			check.Status = StatusDown
			check.Data = map[string]string{"error": outcome}
			response.Status = StatusDown
		}
		response.Checks = append(response.Checks, check)
	}
	slices.SortFunc(response.Checks, func(a, b CheckResponse) int { return strings.Compare(a.Name, b.Name) })
	return response
}

// failure is the Response when the checks' outcome could not be read at all.
func failure(err error) Response {
	return Response{Status: StatusDown, Checks: []CheckResponse{{
		Name:   "health",
		Status: StatusDown,
		Data:   map[string]string{"error": err.Error()},
	}}}
}

// recordedResponse is an in-memory http.ResponseWriter that keeps what
// heptiolabs' endpoints write: the status code and the body.
type recordedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// Header returns the headers heptiolabs sets; they are not used.
func (r *recordedResponse) Header() http.Header { return r.header }

// WriteHeader keeps the first status code written, as a real response does.
func (r *recordedResponse) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

// Write keeps the body, implying status 200 if none was written.
func (r *recordedResponse) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}
