package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	executorservice "github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/pkg/executor"
)

func init() { roles["executor-wide"] = executorWide }

// executorWide runs the executor service through service.RunHosting (the
// executor binary's configuration, wiring, runtime and adapters) hosting
// the example payment-processor with the gateway delay -delay and a
// per-type concurrency of -max instead of its descriptor's 10. No variable
// raises a type's MaxConcurrentTasks (it is the handler's own declaration),
// and the footprint scenarios need every task parked in its handler at
// once, not queued behind ten. At each SIGUSR1 it collects garbage and
// returns freed memory to the system, then prints "collected <GCs>", so
// that the harness reads live memory rather than garbage.
func executorWide(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("executor-wide", flag.ContinueOnError)
	maxTasks := fs.Int("max", 10, "payment-processor's MaxConcurrentTasks")
	delay := fs.Duration("delay", 2*time.Second, "payment-processor's gateway delay")
	if err := fs.Parse(args); err != nil {
		return err
	}
	go collectOnSignal(ctx, stdout)
	hosted := []executor.Executor{widened{Executor: examples.NewPaymentProcessor(*delay), max: *maxTasks}}
	return executorservice.RunHosting(ctx, nil, os.Getenv, stdout, os.Stderr, hosted)
}

// widened is an executor declaring another MaxConcurrentTasks.
type widened struct {
	executor.Executor
	max int
}

// Descriptor implements executor.Executor.
func (w widened) Descriptor() executor.Descriptor {
	d := w.Executor.Descriptor()
	d.MaxConcurrentTasks = w.max
	return d
}

// collectOnSignal answers each SIGUSR1 until ctx ends.
func collectOnSignal(ctx context.Context, stdout io.Writer) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for {
		select {
		case <-usr1:
			debug.FreeOSMemory() // a full collection, then memory back to the system
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Fprintln(stdout, "collected "+strconv.Itoa(int(m.NumGC)))
		case <-ctx.Done():
			return
		}
	}
}

// startWide starts this binary as executor-wide against engine, serving
// payment-processor over gRPC push with room for tasks tasks at once, and
// returns it ready with its executor id.
func startWide(ctx context.Context, engine *extrasEngine, tasks int, delay time.Duration) (*service, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	const name, instance = "bench-wide", "bench"
	room := strconv.Itoa(tasks + 64)
	svc, err := startServiceArgs(ctx, self, []string{"-role", "executor-wide", "--", "-max", strconv.Itoa(tasks), "-delay", delay.String()},
		map[string]string{
			"GAMELAN_EXECUTOR_NAME":                     name,
			"GAMELAN_EXECUTOR_INSTANCE_ID":              instance,
			"GAMELAN_EXECUTOR_ENABLED_TYPES":            "payment-processor",
			"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":      "payment-processor=grpc",
			"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET":       engine.addr(),
			"GAMELAN_EXECUTOR_GRPC_HOST":                "127.0.0.1",
			"GAMELAN_EXECUTOR_GRPC_PORT":                "0",
			"GAMELAN_EXECUTOR_THREAD_POOL_SIZE":         room,
			"GAMELAN_EXECUTOR_QUEUE_SIZE":               room,
			"GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE":       room,
			"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "60",
		})
	if err != nil {
		return nil, "", err
	}
	return svc, name + "-payment-processor-" + instance, nil
}

// collect makes the executor-wide process collect garbage and waits until
// it has.
func collect(svc *service) error {
	_, err := svc.ask(syscall.SIGUSR1, "collected ", 10*time.Second)
	return err
}
