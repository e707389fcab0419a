// Package health serves the service's start-up, liveness and readiness
// probes on /q/health/started, /q/health/live, /q/health/ready and
// /q/health, answering SmallRye-style
// JSON as Quarkus services do:
//
//	{"status":"DOWN","checks":[{"name":"intake","status":"DOWN","data":{"error":"not connected"}},{"name":"runtime","status":"UP"}]}
//
// The status code is 200 when the status is UP and 503 when it is DOWN; the
// checks are sorted by name. /q/health/started evaluates the start-up checks
// (has the process finished starting: for an orchestrator's startup probe,
// which holds the liveness probe back until then), /q/health/live the
// liveness checks,
// /q/health/ready the readiness and the liveness checks (a process that
// should be restarted is not ready either), and /q/health the same set as
// /q/health/ready. Only GET and HEAD are answered; other methods get 405.
//
// Each check is a github.com/heptiolabs/healthcheck Check wrapped in its
// Timeout, so that a hung check is reported DOWN instead of hanging the probe.
// Checks run one after another, so a probe answers within the number of checks
// times the check timeout; keep both small enough for the orchestrator's probe
// timeout.
//
// GRPC answers the gRPC health checking protocol (grpc.health.v1) from the
// same checks, for the process's gRPC servers.
//
// An error's text is shown verbatim to whoever can reach the HTTP port:
// checks must never put secrets, tokens or credentials into their errors.
package health

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heptiolabs/healthcheck"
)

// Paths of the probes mounted by Register.
const (
	StartedPath = "/q/health/started"
	LivePath    = "/q/health/live"
	ReadyPath   = "/q/health/ready"
	HealthPath  = "/q/health"
)

// Statuses of a Response and of each of its checks.
const (
	StatusUp   = "UP"
	StatusDown = "DOWN"
)

// DefaultCheckTimeout bounds each check when New is given no positive timeout.
const DefaultCheckTimeout = time.Second

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
	checkTimeout time.Duration

	mu        sync.RWMutex
	startup   map[string]healthcheck.Check
	liveness  map[string]healthcheck.Check
	readiness map[string]healthcheck.Check
}

// checkSet names the checks a probe evaluates.
type checkSet int

const (
	startupSet   checkSet = iota // the start-up checks
	livenessSet                  // the liveness checks
	readinessSet                 // the readiness and the liveness checks
)

// New returns Probes with no checks, which answer UP. Each check is given at
// most checkTimeout (DefaultCheckTimeout if not positive) before it is
// reported DOWN with a "timed out" error; a check that overruns keeps running
// in its own goroutine until it returns, so checks should still bound their
// own work.
func New(checkTimeout time.Duration) *Probes {
	if checkTimeout <= 0 {
		checkTimeout = DefaultCheckTimeout
	}
	return &Probes{
		checkTimeout: checkTimeout,
		startup:      make(map[string]healthcheck.Check),
		liveness:     make(map[string]healthcheck.Check),
		readiness:    make(map[string]healthcheck.Check),
	}
}

// AddLiveness registers a check that fails when this process is broken and
// should be restarted, not when a dependency is unavailable. It is evaluated
// by all three probes. A nil error means UP; an error means DOWN with its text
// shown, so it must not contain secrets. A panic is reported as DOWN.
// Registering a name again replaces the earlier check of the same kind. Names
// must be unique across liveness and readiness checks, because /q/health/ready
// reports both in one list.
func (p *Probes) AddLiveness(name string, check func() error) {
	p.add(p.liveness, name, check)
}

// AddReadiness registers a check that fails while this process should not be
// sent work (not registered, intake not connected, draining). It is evaluated
// by /q/health/ready and /q/health. The rules of AddLiveness about errors,
// panics and names apply.
func (p *Probes) AddReadiness(name string, check func() error) {
	p.add(p.readiness, name, check)
}

// AddStartup registers a check that fails until this process has finished
// starting (its own start-up work, never a dependency's availability). It
// is evaluated by /q/health/started only. The rules of AddLiveness about
// errors, panics and names apply.
func (p *Probes) AddStartup(name string, check func() error) {
	p.add(p.startup, name, check)
}

// Register mounts the four probes on mux at StartedPath, LivePath,
// ReadyPath and HealthPath. It panics, as http.ServeMux does, if one of the
// paths is already registered on mux.
func (p *Probes) Register(mux *http.ServeMux) {
	mux.Handle(StartedPath, p.probe(startupSet))
	mux.Handle(LivePath, p.probe(livenessSet))
	mux.Handle(ReadyPath, p.probe(readinessSet))
	mux.Handle(HealthPath, p.probe(readinessSet))
}

// add stores check under name in checks, bounded by the check timeout.
func (p *Probes) add(checks map[string]healthcheck.Check, name string, check func() error) {
	bounded := healthcheck.Timeout(guarded(check), p.checkTimeout)
	p.mu.Lock()
	defer p.mu.Unlock()
	checks[name] = bounded
}

// guarded makes every failure of check, panics included, an error whose text
// is neither empty nor "OK" (what a passing check showed before this package
// rendered its JSON itself), so that a DOWN check always says why.
func guarded(check func() error) healthcheck.Check {
	return func() (err error) {
		defer func() {
			if recovered := recover(); recovered != nil {
				err = fmt.Errorf("check panicked: %v", recovered)
			}
		}()
		if err := check(); err != nil {
			if text := err.Error(); text == "" || text == "OK" {
				return fmt.Errorf("check failed with error text %q", text)
			}
			return err
		}
		return nil
	}
}

// probe serves one probe, evaluating the checks of set.
func (p *Probes) probe(set checkSet) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		response := p.evaluate(set)
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

// evaluate runs the checks one after another, outside the lock so that
// registering a check never waits for a probe. Should a name be registered as
// both kinds, both checks run and either failing makes the Response DOWN, but
// only the liveness check's outcome is listed under that name.
func (p *Probes) evaluate(set checkSet) Response {
	type namedCheck struct {
		name  string
		check healthcheck.Check
	}
	var checks []namedCheck
	collect := func(from map[string]healthcheck.Check) {
		for name, check := range from {
			checks = append(checks, namedCheck{name, check})
		}
	}
	p.mu.RLock()
	switch set {
	case startupSet:
		collect(p.startup)
	case readinessSet:
		collect(p.readiness)
		collect(p.liveness)
	default:
		collect(p.liveness)
	}
	p.mu.RUnlock()

	response := Response{Status: StatusUp, Checks: []CheckResponse{}}
	outcomes := make(map[string]CheckResponse, len(checks))
	for _, c := range checks {
		outcome := CheckResponse{Name: c.name, Status: StatusUp}
		if err := c.check(); err != nil {
			outcome.Status = StatusDown
			outcome.Data = map[string]string{"error": err.Error()}
			response.Status = StatusDown
		}
		outcomes[c.name] = outcome
	}
	response.Checks = slices.AppendSeq(response.Checks, maps.Values(outcomes))
	slices.SortFunc(response.Checks, func(a, b CheckResponse) int { return strings.Compare(a.Name, b.Name) })
	return response
}
