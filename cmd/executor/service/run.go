package service

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/telemetry"
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
func fixed(hosted []executor.Executor) func(config.Config) []executor.Executor {
	return func(config.Config) []executor.Executor { return hosted }
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
	return run(ctx, args, getenv, stdout, stderr, fixed(hosted), func(cfg config.Config, executors []executor.Executor, log *slog.Logger) (*Service, func(), error) {
		return initServiceWithPorts(cfg, executors, log, p)
	})
}

type injector func(config.Config, []executor.Executor, *slog.Logger) (*Service, func(), error)

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer,
	hosted func(config.Config) []executor.Executor, inject injector) error {
	flags := flag.NewFlagSet("executor", flag.ContinueOnError)
	flags.SetOutput(stderr)
	printVariables := flags.Bool("variables", false, "print the configuration variables as a Markdown table and exit")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: executor [-variables]\n\nThe service is configured through environment variables; -variables lists them.")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: the service is configured through environment variables", flags.Args())
	}
	if *printVariables {
		_, err := io.WriteString(stdout, VariablesTable())
		return err
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	executors, err := enabledExecutors(cfg, hosted(cfg))
	if err != nil {
		return err
	}
	log := newLogger(cfg, stdout)
	log.Info("starting executor service", slog.Any("config", cfg))
	svc, cleanup, err := inject(cfg, executors, log)
	if err != nil {
		return err
	}
	defer cleanup()
	return svc.Run(ctx)
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

// newLogger returns the service's logger; every value it writes is bounded
// (telemetry.MaxLogValueBytes), whatever its source.
func newLogger(cfg config.Config, stdout io.Writer) *slog.Logger {
	return telemetry.NewLogger(stdout, cfg.SlogLevel(), cfg.LogFormat == "text")
}

// VariablesTable renders every configuration variable as a Markdown table,
// the one in the README.
func VariablesTable() string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, v := range config.Variables() {
		def := "`" + v.Default + "`"
		if v.Default == "" {
			def = "none"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", v.Name, def, strings.ReplaceAll(v.Doc, "|", "\\|"))
	}
	return b.String()
}
