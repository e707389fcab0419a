// Command fixture-executor is the executor service as cmd/executor runs it,
// but hosting the example executor types (executors/examples) whatever the
// service's own list (executors.Hosted) holds. The end-to-end tests run it,
// so that a fork adding, removing or replacing types leaves them green. The
// payment-processor's gateway delay is PAYMENT_GATEWAY_DELAY, as for the
// service (2s when unset).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gamelan-go/executor/cmd/executor/service"
	"github.com/gamelan-go/executor/executors/examples"
)

func main() {
	delay := 2 * time.Second
	if v := os.Getenv("PAYMENT_GATEWAY_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fixture-executor: PAYMENT_GATEWAY_DELAY=%q: %v\n", v, err)
			os.Exit(2)
		}
		delay = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop) // a second signal ends the process at once
	err := service.RunHosting(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr,
		examples.All(examples.Config{PaymentGatewayDelay: delay}))
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "fixture-executor: %v\n", err)
		os.Exit(1)
	}
}
