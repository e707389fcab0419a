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
	log      *slog.Logger
	running  atomic.Bool
}

func newService(s *settings, rt *app.Runtime, metrics *telemetry.Metrics, log *slog.Logger) *Service {
	metrics.ObserveLoad(func() telemetry.Load {
		stats := rt.Stats()
		types := make(map[string]telemetry.TypeLoad, len(stats.Types))
		for name, t := range stats.Types {
			types[name] = telemetry.TypeLoad(t)
		}
		return telemetry.Load{Admitted: stats.Admitted, Running: stats.Running, Types: types, Outbox: stats.Outbox}
	})
	return &Service{settings: s, runtime: rt, metrics: metrics, log: log}
}

// probeTimeout bounds one health check.
const probeTimeout = time.Second

// Run serves the probes, runs the runtime until ctx ends, and stops both in
// order: the runtime drains first (the probes say not ready meanwhile), then
// the HTTP server closes.
func (s *Service) Run(ctx context.Context) error {
	addr := net.JoinHostPort(string(s.settings.HTTPHost), strconv.Itoa(int(s.settings.HTTPPort)))
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", addr, err)
	}
	probes := health.New(probeTimeout)
	probes.AddLiveness("runtime", func() error {
		if !s.running.Load() {
			return errors.New("runtime not running")
		}
		return nil
	})
	probes.AddReadiness("executor", s.runtime.Ready)
	mux := http.NewServeMux()
	probes.Register(mux)
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
