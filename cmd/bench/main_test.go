package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// TestMain lets the test binary play the raw baselines: startRole runs the
// current executable with -role, which under `go test` is this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-role" {
		args := os.Args[3:]
		if len(args) > 0 && args[0] == "--" {
			args = args[1:]
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runRole(ctx, os.Args[2], args)
		stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench -role %s: %v\n", os.Args[2], err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
