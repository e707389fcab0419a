package devengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The one-command stack: the engine starts the executor service beside
// itself, submits a demo workload through gRPC and Kafka, shows progress,
// prints a summary, and keeps both running until it is stopped.

// runStack supervises the executor until ctx ends (then stops it with
// SIGTERM and waits for its drain) or it exits on its own (an error).
// Meanwhile it runs workload (the demo) beside the executor; it owns that
// goroutine: whatever its way out, it cancels the workload's context and
// returns only once the workload has returned. An error of the workload
// is logged, not returned.
func runStack(ctx context.Context, o Options, httpAddr, grpcAddr string, kafka []string, out io.Writer, log *slog.Logger, workload func(context.Context) error) error {
	if err := os.MkdirAll(filepath.Dir(o.ExecutorLog), 0o755); err != nil {
		return fmt.Errorf("executor log: %w", err)
	}
	logFile, err := os.Create(o.ExecutorLog)
	if err != nil {
		return fmt.Errorf("executor log: %w", err)
	}
	defer logFile.Close()
	httpHost, httpPort, err := net.SplitHostPort(o.ExecutorHTTPAddr)
	if err != nil {
		return fmt.Errorf("executor HTTP address %q: %w", o.ExecutorHTTPAddr, err)
	}
	cmd := exec.Command(o.Executor)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a Ctrl-C in the terminal reaches the engine
	// only, which then stops the executor with exactly one SIGTERM (a
	// second signal would end its drain at once).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(),
		"GAMELAN_EXECUTOR_ENGINE_URL=http://"+httpAddr,
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET="+grpcAddr,
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS="+strings.Join(kafka, ","),
		"GAMELAN_EXECUTOR_HTTP_HOST="+httpHost,
		"GAMELAN_EXECUTOR_HTTP_PORT="+httpPort,
		"GAMELAN_EXECUTOR_GRPC_HOST=127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT="+strconv.Itoa(o.ExecutorGRPCPort),
		"GAMELAN_EXECUTOR_REST_HOST=127.0.0.1",
		"GAMELAN_EXECUTOR_REST_PORT="+strconv.Itoa(o.ExecutorRESTPort),
		"GAMELAN_EXECUTOR_INSTANCE_ID=local",
		"PAYMENT_GATEWAY_DELAY=20ms",
	)
	if o.JWTSecret != "" {
		cmd.Env = append(cmd.Env, "GAMELAN_EXECUTOR_JWT_SECRET="+o.JWTSecret)
		// The executor's tokens must carry what the engine checks.
		if o.ExecutorIssuer != "" {
			cmd.Env = append(cmd.Env, "GAMELAN_EXECUTOR_JWT_ISSUER="+o.ExecutorIssuer)
		}
		if o.ExecutorAudience != "" {
			cmd.Env = append(cmd.Env, "GAMELAN_EXECUTOR_JWT_AUDIENCE="+o.ExecutorAudience)
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start executor %s: %w", o.Executor, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(out, "engine: http://%s (API), %s (gRPC), Kafka %s\nexecutor: pid %d, logs in %s\n",
		httpAddr, grpcAddr, strings.Join(kafka, ","), cmd.Process.Pid, o.ExecutorLog)

	// Deferred in this order, stopDemo runs first, then the wait.
	var demoRunning sync.WaitGroup
	defer demoRunning.Wait()
	demoCtx, stopDemo := context.WithCancel(ctx)
	defer stopDemo()
	demoDone := make(chan error, 1) // never blocks the demo goroutine
	demoRunning.Go(func() { demoDone <- workload(demoCtx) })

	for {
		select {
		case err := <-exited:
			return fmt.Errorf("executor exited: %v (see %s)", err, o.ExecutorLog)
		case err := <-demoDone:
			demoDone = nil
			if err != nil && ctx.Err() == nil {
				log.Error("demo failed", slog.Any("error", err))
			}
		case <-ctx.Done():
			fmt.Fprintln(out, "stopping the executor (SIGTERM) and the engine...")
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				if err != nil {
					return fmt.Errorf("executor stopped with %v (see %s)", err, o.ExecutorLog)
				}
				return nil
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				return errors.New("executor did not stop within 60s; killed")
			}
		}
	}
}

// demoTypes are the example executor types and a valid and an invalid
// input for each.
var demoTypes = []demoType{
	{"calculate-tax", func(i int) map[string]any { return map[string]any{"amount": float64(100 + i)} },
		func(int) map[string]any { return map[string]any{"amount": "lots"} }},
	{"order-validator", func(i int) map[string]any { return map[string]any{"orderId": fmt.Sprintf("ORDER-%d", i)} },
		func(i int) map[string]any { return map[string]any{"orderId": fmt.Sprintf("X-%d", i)} }},
	{"notification-sender", func(i int) map[string]any {
		return map[string]any{"recipient": "ops@example.com", "message": fmt.Sprint("done ", i)}
	},
		func(int) map[string]any { return map[string]any{"recipient": ""} }},
	{"payment-processor", func(i int) map[string]any { return map[string]any{"totalAmount": float64(10 + i), "customerId": "C-1"} },
		func(int) map[string]any { return map[string]any{"totalAmount": -5} }},
}

// demo waits until the executor is ready, submits perType tasks of each
// example type it hosts (one in ten with bad input, to show failures by
// code), shows progress and prints the summary. Types it hosts that are not
// examples (a fork's own) get no demo workload: the summary says how to
// submit tasks to them.
func demo(ctx context.Context, perType int, engine *Engine, engineAddr, executorAddr string, out io.Writer) error {
	if err := awaitReady(ctx, executorAddr); err != nil {
		return err
	}
	hosted := hostedTypes(engine)
	fmt.Fprintf(out, "executor ready: http://%s/q/health/ready, hosting %s\n", executorAddr, strings.Join(hosted, ", "))
	var types []demoType
	for _, dt := range demoTypes {
		if slices.Contains(hosted, dt.executorType) {
			types = append(types, dt)
		}
	}
	if perType <= 0 || len(types) == 0 {
		example := "TYPE"
		if len(hosted) > 0 {
			example = hosted[0]
		}
		fmt.Fprintf(out, "no demo workload; submit tasks with: curl -s -XPOST http://%s/api/v1/tasks -d '{\"executorType\":\"%s\",\"context\":{}}'. Ctrl-C to stop.\n",
			engineAddr, example)
		return nil
	}
	total := perType * len(types)
	fmt.Fprintf(out, "submitting %d tasks (%d per example type, one in ten with bad input)...\n", total, perType)
	var ids []string
	for i := range perType {
		for _, dt := range types {
			input := dt.valid(i)
			if i%10 == 9 {
				input = dt.bad(i)
			}
			t, err := engine.Submit(TaskSpec{ExecutorType: dt.executorType, Context: input, TimeoutSeconds: 30})
			if err != nil {
				return err
			}
			ids = append(ids, t.ID)
		}
	}
	done := func() int {
		n := 0
		for _, id := range ids {
			// The engine forgets final tasks only: one it no longer knows
			// was answered.
			if t, ok := engine.Task(id); !ok || t.Final() {
				n++
			}
		}
		return n
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for answered := done(); answered < total; answered = done() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			fmt.Fprintf(out, "progress: %d/%d answered\n", answered, total)
		}
	}
	fmt.Fprintf(out, "all %d tasks answered.\n", total)
	Summarize(engine.Tasks(), engine.Counters()).Print(out)
	fmt.Fprintf(out, "\nservices stay up: engine API http://%s/api/v1/executors, executor probes http://%s/q/health. Ctrl-C to stop.\n",
		engineAddr, executorAddr)
	return nil
}

// demoType is an example executor type, with a valid and an invalid input.
type demoType = struct {
	executorType string
	valid, bad   func(i int) map[string]any
}

// hostedTypes returns the executor types registered and healthy, sorted.
func hostedTypes(engine *Engine) []string {
	var types []string
	for _, e := range engine.Executors() {
		if e.Healthy && !slices.Contains(types, e.Type) {
			types = append(types, e.Type)
		}
	}
	slices.Sort(types)
	return types
}

// awaitReady waits until the executor answers its readiness probe, which
// it does once every type it hosts is registered.
func awaitReady(ctx context.Context, executorAddr string) error {
	deadline, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get("http://" + executorAddr + "/q/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-deadline.Done():
			return fmt.Errorf("the executor never became ready: %w", deadline.Err())
		case <-tick.C:
		}
	}
}
