package service

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/internal/version"
	"github.com/gamelan-go/executor/pkg/executor"
)

// Run runs the executor service, hosting the executor types of
// executors.Hosted, until ctx ends, then stops it gracefully. It reads the
// environment only through getenv, logs to stdout, and returns an error when
// the service cannot start (a bad variable, a port in use) or fails; a
// requested shutdown is not an error. args are the command-line arguments
// without the program name.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return run(ctx, args, getenv, stdout, stderr, hostedExecutors, initService)
}

// RunHosting is Run hosting the given executor types instead of the
// service's list. Tests use it to drive the service through fixtures of
// their own, so that they do not depend on what a fork hosts.
func RunHosting(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, hosted []executor.Executor) error {
	return run(ctx, args, getenv, stdout, stderr, fixed(hosted), initService)
}

// fixed returns a list of hosted executors that ignores the configuration.
func fixed(hosted []executor.Executor) func(*settings) []executor.Executor {
	return func(*settings) []executor.Executor { return hosted }
}

// Ports replaces every adapter of the service: all hosted executor types
// are served through Source and Sink, and registered through Registrar and
// Heartbeater.
type Ports struct {
	Source      ports.TaskSource
	Sink        ports.ResultSink
	Registrar   ports.Registrar
	Heartbeater ports.Heartbeater
}

// RunWithPorts is RunHosting with the given ports in place of the adapters
// the configuration selects. Component tests use it to drive the real
// service (configuration, wiring, runtime, probes) through in-memory ports.
func RunWithPorts(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, hosted []executor.Executor, p Ports) error {
	return run(ctx, args, getenv, stdout, stderr, fixed(hosted), func(s *settings, executors []executor.Executor, log *slog.Logger) (*Service, func(), error) {
		return initServiceWithPorts(s, executors, log, p)
	})
}

type injector func(*settings, []executor.Executor, *slog.Logger) (*Service, func(), error)

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer,
	hosted func(*settings) []executor.Executor, inject injector) error {
	flags := flag.NewFlagSet("executor", flag.ContinueOnError)
	flags.SetOutput(stderr)
	printVariables := flags.Bool("variables", false, "print the configuration variables as a Markdown table and exit")
	healthcheck := flags.String("healthcheck", "", "GET this URL (e.g. http://127.0.0.1:8090/q/health/ready), exit 0 if it answers 200 and 1 otherwise: the probe of container healthchecks, since the image has no shell or curl")
	printVersion := flags.Bool("version", false, "print the build's version, commit, build date and Go release, and exit")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: executor [-variables] [-version] [-healthcheck URL]\n\nThe service is configured through environment variables; -variables lists them.")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: the service is configured through environment variables", flags.Args())
	}
	// -version reads no configuration, so that it works on any image
	// whatever its environment.
	if *printVersion {
		return version.Get().Write(stdout, "executor")
	}
	if *printVariables {
		_, err := io.WriteString(stdout, VariablesTable())
		return err
	}
	if *healthcheck != "" {
		return probe(ctx, *healthcheck)
	}

	s, err := load(getenv)
	if err != nil {
		return err
	}
	executors, err := enabledExecutors(s.Config, hosted(s))
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(stdout, s.LogLevel.Slog(), s.LogFormat == "text")
	// The build comes first: which binary runs is the first question about
	// any log.
	log.Info("starting executor service", append([]any{slog.Any("build", version.Get())}, s.logAttrs()...)...)
	warnShutdownBudget(log, s.Config)
	if s.tracing, err = telemetry.NewTracing(ctx, getenv, telemetry.DefaultServiceName, string(s.Version), log); err != nil {
		return err
	}
	defer func() {
		// After the runtime has stopped, so that the last tasks' spans are
		// flushed too; bounded by telemetry.ShutdownTimeout.
		if err := s.tracing.Shutdown(context.WithoutCancel(ctx)); err != nil {
			log.Warn("traces not flushed", slog.Any("error", err))
		}
	}()
	svc, cleanup, err := inject(s, executors, log)
	if err != nil {
		return err
	}
	defer cleanup()
	return svc.Run(ctx)
}

// warnShutdownBudget logs a warning when the orchestrator's grace period,
// as the deployment passed it in, is shorter than the preStop, the drain
// and the flush together: the process would be killed before it delivered
// the results of the tasks it ran. It only warns, because a deployment may
// knowingly accept that (tasks that are redelivered anyway).
func warnShutdownBudget(log *slog.Logger, cfg config.Config) {
	need, grace, fits := cfg.ShutdownBudget()
	if fits {
		return
	}
	log.Warn("shutdown budget exceeds the termination grace period: a stop may kill the process mid-drain and lose results; "+
		"raise GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS (and terminationGracePeriodSeconds) or lower the timeouts",
		slog.Int64("termination_grace_period_seconds", int64(grace/time.Second)),
		slog.Int64("needed_seconds", int64(need/time.Second)),
		slog.Int64("pre_stop_seconds", int64(cfg.PreStop.Duration()/time.Second)),
		slog.Int64("shutdown_timeout_seconds", int64(cfg.ShutdownTimeout.Duration()/time.Second)),
		slog.Int64("result_flush_timeout_seconds", int64(cfg.ResultFlushTimeout.Duration()/time.Second)))
}

// healthcheckTimeout bounds the -healthcheck request, below the interval of
// any sensible container healthcheck.
const healthcheckTimeout = 3 * time.Second

// probe answers -healthcheck: nil when url answers 200 within
// healthcheckTimeout, else an error saying what it answered.
func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s", url, resp.Status)
	}
	return nil
}

// enabledExecutors keeps the executors ENABLED_TYPES names (all when empty),
// after checking that every type the configuration names is hosted.
func enabledExecutors(cfg config.Config, hosted []executor.Executor) ([]executor.Executor, error) {
	types := make([]string, len(hosted))
	for i, ex := range hosted {
		types[i] = ex.Descriptor().Type
	}
	if err := cfg.CheckHostedTypes(types); err != nil {
		return nil, err
	}
	var enabled []executor.Executor
	for _, ex := range hosted {
		if cfg.TypeEnabled(ex.Descriptor().Type) {
			enabled = append(enabled, ex)
		}
	}
	return enabled, nil
}

// load reads the settings: Config and the section of every transport.
func load(getenv func(string) string) (*settings, error) {
	s := new(settings)
	cfg, err := config.Load(getenv, s.sections()...)
	if err != nil {
		return nil, err
	}
	s.Config = cfg
	if err := s.checkKinds(); err != nil {
		return nil, err
	}
	return s, nil
}

// logAttrs shows the settings in the start-up log line, secrets redacted.
func (s *settings) logAttrs() []any {
	attrs := []any{slog.Any("config", s.Config)}
	for _, t := range transports {
		if t.section != nil {
			attrs = append(attrs, slog.Any(t.kind, config.LogValue(t.section(s))))
		}
	}
	return attrs
}

// describeKinds fills in the kinds of the transport table where a
// variable's doc names them.
func describeKinds(doc string) string {
	var transportKinds, registrarKinds []string
	for _, t := range transports {
		if servesTasks(t) {
			transportKinds = append(transportKinds, t.about)
		}
		if registers(t) {
			registrarKinds = append(registrarKinds, t.kind)
		}
	}
	for _, alias := range slices.Sorted(maps.Keys(registrarAliases)) {
		registrarKinds = append(registrarKinds, alias+" (the former name of "+registrarAliases[alias]+")")
	}
	doc = strings.ReplaceAll(doc, "{transports}", strings.Join(transportKinds, ", "))
	return strings.ReplaceAll(doc, "{registrars}", strings.Join(registrarKinds, ", "))
}

// Variables lists every variable the service reads, Config's and every
// transport section's, in order: the README's table and the deployment
// manifests' check (deploy/) share it.
func Variables() []config.Variable { return config.Variables(new(settings).sections()...) }

// VariablesTable renders every configuration variable as a Markdown table,
// the one in the README.
func VariablesTable() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, v := range Variables() {
		def := "`" + v.Default + "`"
		if v.Default == "" {
			def = "none"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", v.Name, def, strings.ReplaceAll(describeKinds(v.Doc), "|", "\\|"))
	}
	return b.String()
}
