// Command executor is the executor service: it hosts the executor types
// listed in executors.Hosted (executors/hosted.go) and serves them to a workflow engine over
// the transports chosen by GAMELAN_EXECUTOR_* environment variables.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gamelan-go/executor/cmd/executor/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts the graceful stop; restoring the default
	// handling then lets a second one end the process at once.
	context.AfterFunc(ctx, stop)
	err := service.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "executor: %v\n", err)
		os.Exit(1)
	}
}
