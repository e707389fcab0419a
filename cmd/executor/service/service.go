package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/health"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// Service is the assembled executor service: the runtime and the HTTP
// server for probes and metrics.
type Service struct {
	settings *settings
	runtime  *app.Runtime
	metrics  *telemetry.Metrics
	probes   *health.Probes
	log      *slog.Logger
	running  atomic.Bool
}

func newService(s *settings, rt *app.Runtime, metrics *telemetry.Metrics, probes *health.Probes, log *slog.Logger) *Service {
	metrics.ObserveLoad(func() telemetry.Load {
		stats := rt.Stats()
		return telemetry.Load{Admitted: stats.Admitted, Running: stats.Running, Types: stats.Types, Outbox: stats.Outbox}
	})
	svc := &Service{settings: s, runtime: rt, metrics: metrics, probes: probes, log: log}
	// These replace newProbes' placeholders of the same names.
	probes.AddLiveness(livenessCheck, func() error {
		if !svc.running.Load() {
			return errNotRunning
		}
		return nil
	})
	probes.AddReadiness(readinessCheck, rt.Ready)
	probes.AddStartup(startupCheck, rt.Started)
	return svc
}

// probeTimeout bounds one health check.
const probeTimeout = time.Second

// Names of the service's health checks.
const (
	startupCheck   = "initialized"
	livenessCheck  = "runtime"
	readinessCheck = "executor"
)

var errNotRunning = errors.New("runtime not running")

// newProbes returns the process's health checks, which the HTTP probes and
// the gRPC health service of every gRPC server answer from. The gRPC servers
// are built, and listen, before the service exists to supply the real
// checks, so until then placeholders of the same names say it is not
// running: a health call in that window must not find no checks, which
// would read as healthy.
func newProbes() *health.Probes {
	probes := health.New(probeTimeout)
	notRunning := func() error { return errNotRunning }
	probes.AddStartup(startupCheck, notRunning)
	probes.AddLiveness(livenessCheck, notRunning)
	probes.AddReadiness(readinessCheck, notRunning)
	return probes
}

// Run serves the probes, runs the runtime until ctx ends, and stops both in
// order: the runtime drains first (the probes say not ready meanwhile), then
// the HTTP server closes.
func (s *Service) Run(ctx context.Context) error {
	addr := net.JoinHostPort(string(s.settings.HTTPHost), strconv.Itoa(int(s.settings.HTTPPort)))
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	s.probes.Register(mux)
	mux.Handle("/q/metrics", s.metrics.Handler())
	if s.settings.Profiling {
		// net/http/pprof's handlers, on this server only (not on
		// http.DefaultServeMux, which another library could serve).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.log.Warn("profiling is on: /debug/pprof/ is served on the HTTP server")
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	runCtx, stopRuntime := context.WithCancelCause(ctx)
	defer stopRuntime(nil)
	var serving sync.WaitGroup
	serving.Go(func() {
		if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			stopRuntime(fmt.Errorf("http server: %w", err))
		}
	})
	s.log.Info("http server listening", slog.String("addr", listener.Addr().String()))

	s.running.Store(true)
	runErr := s.runtime.Run(runCtx)
	s.running.Store(false)

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shutdownErr := server.Shutdown(shutdownCtx)
	serving.Wait()
	if cause := context.Cause(runCtx); runErr == nil && ctx.Err() == nil && cause != nil {
		runErr = cause // the HTTP server failed and took the runtime down
	}
	if runErr == nil && shutdownErr != nil {
		runErr = fmt.Errorf("shut down http server: %w", shutdownErr)
	}
	s.log.Info("service stopped")
	return runErr
}
