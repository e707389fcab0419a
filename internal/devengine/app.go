package devengine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	ggrpc "google.golang.org/grpc"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/internal/version"
)

// Options configure the reference engine process.
type Options struct {
	HTTPAddr, GRPCAddr string
	Kafka              KafkaConfig
	HeartbeatExpiry    time.Duration
	// JWTSecret, when set, turns tokens on in both directions.
	JWTSecret string
	// ExecutorIssuer is the issuer executors' tokens must carry
	// (DEVENGINE_EXECUTOR_ISSUER, gamelan-executor).
	ExecutorIssuer string
	// ExecutorAudience is the audience executors' tokens must carry: the
	// executors' GAMELAN_EXECUTOR_JWT_AUDIENCE (DEVENGINE_EXECUTOR_AUDIENCE,
	// gamelan-engine, the executors' default). A token for another
	// audience is refused.
	ExecutorAudience string
	// Executor, when set, is an executor binary to start beside the engine
	// (the one-command stack); Demo tasks of each example type are then
	// submitted once it is ready.
	Executor string
	Demo     int
	// ExecutorLog is where the child executor's logs go.
	ExecutorLog string
	// ExecutorHTTPAddr, ExecutorGRPCPort and ExecutorRESTPort are where the
	// child executor serves its probes, push server and REST intake.
	ExecutorHTTPAddr                   string
	ExecutorGRPCPort, ExecutorRESTPort int
	LogLevel                           slog.Level
	// ShowVersion asks Run to print the build's version and return at once.
	ShowVersion bool
	// TracerProvider turns the engine's tracing on (see Config); Run sets
	// it from the OTEL_* variables, nil leaves tracing off.
	TracerProvider trace.TracerProvider
}

// parseOptions reads flags and DEVENGINE_* variables.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (Options, error) {
	env := func(key, def string) string {
		if v := getenv("DEVENGINE_" + key); v != "" {
			return v
		}
		return def
	}
	o := Options{}
	fs := flag.NewFlagSet("devengine", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.HTTPAddr, "http", env("HTTP_ADDR", "127.0.0.1:8080"), "API and REST registry address (DEVENGINE_HTTP_ADDR)")
	fs.StringVar(&o.GRPCAddr, "grpc", env("GRPC_ADDR", "127.0.0.1:9000"), "ExecutorService address (DEVENGINE_GRPC_ADDR)")
	fs.StringVar(&o.Kafka.EmbeddedAddress, "kafka", env("KAFKA_ADDR", "127.0.0.1:9092"), "embedded Kafka broker address (DEVENGINE_KAFKA_ADDR)")
	fs.StringVar(&o.Kafka.AdvertisedHost, "kafka-advertised-host", env("KAFKA_ADVERTISED_HOST", ""), "the host the embedded broker tells clients to dial, e.g. its container's name when it listens on 0.0.0.0 (DEVENGINE_KAFKA_ADVERTISED_HOST)")
	brokers := fs.String("kafka-brokers", env("KAFKA_BROKERS", ""), "external Kafka brokers instead of the embedded one (DEVENGINE_KAFKA_BROKERS)")
	expiry := fs.Duration("heartbeat-expiry", 0, "executor heartbeat expiry (DEVENGINE_HEARTBEAT_EXPIRY_SECONDS, default 30s)")
	fs.StringVar(&o.Executor, "executor", "", "executor binary to start beside the engine (the one-command stack)")
	fs.IntVar(&o.Demo, "demo", 0, "with -executor: demo tasks to submit per example type")
	fs.StringVar(&o.ExecutorLog, "executor-log", "bin/executor.log", "with -executor: where its logs go")
	fs.StringVar(&o.ExecutorHTTPAddr, "executor-http", "127.0.0.1:8090", "with -executor: its probes' address")
	fs.IntVar(&o.ExecutorGRPCPort, "executor-grpc-port", 9090, "with -executor: its push server's port on 127.0.0.1")
	fs.IntVar(&o.ExecutorRESTPort, "executor-rest-port", 8091, "with -executor: its REST intake's port on 127.0.0.1")
	fs.BoolVar(&o.ShowVersion, "version", false, "print the build's version, commit, build date and Go release, and exit")
	logLevel := fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (DEVENGINE_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if *brokers != "" {
		o.Kafka.Brokers = strings.Split(*brokers, ",")
	}
	o.HeartbeatExpiry = *expiry
	if s := env("HEARTBEAT_EXPIRY_SECONDS", ""); s != "" && o.HeartbeatExpiry == 0 {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return Options{}, fmt.Errorf("DEVENGINE_HEARTBEAT_EXPIRY_SECONDS=%q: must be a whole number of at least 1", s)
		}
		o.HeartbeatExpiry = time.Duration(n) * time.Second
	}
	o.JWTSecret = env("JWT_SECRET", "")
	o.ExecutorIssuer = env("EXECUTOR_ISSUER", "gamelan-executor")
	o.ExecutorAudience = env("EXECUTOR_AUDIENCE", "gamelan-engine")
	if err := o.LogLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return Options{}, fmt.Errorf("DEVENGINE_LOG_LEVEL=%q: must be debug, info, warn or error", *logLevel)
	}
	return o, nil
}

// Run runs the reference engine until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	if o.ShowVersion {
		return version.Get().Write(stdout, "devengine")
	}
	logOut := stdout
	if o.Executor != "" {
		logOut = stderr // stdout shows the demo's progress
	}
	log := telemetry.NewLogger(logOut, o.LogLevel, true)
	// The same OTEL_* variables as the executor's turn tracing on (off by
	// default): the engine then starts a span per task it dispatches.
	tracing, err := telemetry.NewTracing(ctx, getenv, telemetry.EngineServiceName, version.Get().Version, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := tracing.Shutdown(context.WithoutCancel(ctx)); err != nil {
			log.Warn("traces not flushed", slog.Any("error", err))
		}
	}()
	o.TracerProvider = tracing.Provider
	return run(ctx, o, stdout, log)
}

func run(ctx context.Context, o Options, stdout io.Writer, log *slog.Logger) error {
	engine := New(Config{HeartbeatExpiry: o.HeartbeatExpiry, Log: log, TracerProvider: o.TracerProvider})

	var verify func(string) error
	var verifyAt func(string, time.Time) (string, error)
	var token func() (string, error)
	var grpcConfig grpcengine.Config
	if o.JWTSecret != "" {
		verifierConfig := security.VerifierConfig{Secret: []byte(o.JWTSecret), Issuer: o.ExecutorIssuer, Audience: o.ExecutorAudience}
		verifier, err := security.NewVerifier(verifierConfig)
		if err != nil {
			return fmt.Errorf("token verifier: %w", err)
		}
		verify = func(t string) error { _, err := verifier.Verify(t); return err }
		verifyAt = verifyAsOf(verifierConfig)
		grpcConfig.Auth = grpcAuth(engine, verify)
		minter, err := security.NewMinter(security.MinterConfig{Secret: []byte(o.JWTSecret), Issuer: "gamelan-engine",
			Audience: "gamelan-executor", TTL: 5 * time.Minute, Subject: "devengine", Name: "devengine"})
		if err != nil {
			return fmt.Errorf("token minter: %w", err)
		}
		token = func() (string, error) { return minter.Token("") }
		grpcConfig.PushDialOptions = []ggrpc.DialOption{ggrpc.WithPerRPCCredentials(minter.PerRPCCredentials(false))}
	}

	grpcSide := NewGRPC(engine, grpcConfig, log)
	grpcServer := grpcSide.Server()
	defer grpcServer.Close()
	httpSide := NewHTTP(engine, verify, token, log)
	kafkaSide, err := NewKafka(o.Kafka, engine, verifyAt, token, log)
	if err != nil {
		return err
	}
	defer kafkaSide.Close()
	engine.SetDeliverer("GRPC", grpcSide)
	engine.SetDeliverer("REST", httpSide)
	engine.SetDeliverer("KAFKA", kafkaSide)

	grpcListener, err := net.Listen("tcp", o.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen for gRPC on %s: %w", o.GRPCAddr, err)
	}
	httpListener, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		grpcListener.Close()
		return fmt.Errorf("listen for HTTP on %s: %w", o.HTTPAddr, err)
	}
	httpServer := &http.Server{Handler: httpSide.Handler(), ReadHeaderTimeout: 5 * time.Second}

	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var wg sync.WaitGroup
	wg.Go(func() { _ = engine.Run(runCtx) })
	wg.Go(func() { kafkaSide.Run(runCtx) })
	if err := grpcServer.Start(grpcListener); err != nil {
		grpcListener.Close()
		httpListener.Close()
		return fmt.Errorf("grpc server: %w", err)
	}
	wg.Go(func() {
		select {
		case err := <-grpcServer.Failed():
			stop(fmt.Errorf("grpc server: %w", err))
		case <-runCtx.Done():
		}
	})
	wg.Go(func() {
		if err := httpServer.Serve(httpListener); !errors.Is(err, http.ErrServerClosed) {
			stop(fmt.Errorf("http server: %w", err))
		}
	})
	log.Info("reference engine listening", slog.String("http", httpListener.Addr().String()),
		slog.String("grpc", grpcListener.Addr().String()), slog.Any("kafka", kafkaSide.Brokers()))

	var stackErr error
	if o.Executor != "" {
		httpAddr := httpListener.Addr().String()
		workload := func(ctx context.Context) error {
			return demo(ctx, o.Demo, engine, httpAddr, o.ExecutorHTTPAddr, stdout)
		}
		stackErr = runStack(runCtx, o, httpAddr, grpcListener.Addr().String(), kafkaSide.Brokers(), stdout, log, workload)
		if stackErr != nil {
			stop(stackErr)
		}
	}
	<-runCtx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpServer.Shutdown(shutdownCtx)
	// Executors never end their streams on their own: Shutdown ends them.
	grpcServer.Shutdown(shutdownCtx)
	stop(nil)
	wg.Wait()
	if cause := context.Cause(runCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return stackErr
}
