// Command devengine is the reference engine: the engine side of the
// executor protocol over gRPC, HTTP and an embedded Kafka broker, with an
// HTTP API to submit tasks and read their results. With -executor it also
// starts the executor service and runs a demo workload: the one-command
// local stack behind `make run`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gamelan-go/executor/internal/devengine"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal ends the process at once
	err := devengine.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "devengine: %v\n", err)
		os.Exit(1)
	}
}
