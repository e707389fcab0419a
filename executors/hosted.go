// Package executors is the home of this service's executor types, and
// Hosted is the one list of the types it hosts: a fork adds its types here
// (go run ./cmd/scaffold executor NAME writes one and adds it to the list),
// and takes out the examples it does not want.
//
// Each type lives in a package of its own below this one, written against
// pkg/executor only (test/architecture enforces it), with its unit tests
// beside it (pkg/executor/executortest runs a handler the way the runtime
// does). The examples in executors/examples are the first tenants.
package executors

import (
	"time"

	"github.com/gamelan-go/executor/executors/examples"
	"github.com/gamelan-go/executor/pkg/executor"
)

// Config carries what the hosted executor types read from the service's
// configuration (internal/config, where each setting is a documented
// variable).
type Config struct {
	// PaymentGatewayDelay is the example payment-processor's simulated
	// gateway latency (PAYMENT_GATEWAY_DELAY).
	PaymentGatewayDelay time.Duration
}

// Hosted returns one instance of every executor type this service hosts.
// GAMELAN_EXECUTOR_ENABLED_TYPES then chooses which of them a deployment
// serves, so that one binary can run as several services.
func Hosted(cfg Config) []executor.Executor {
	return []executor.Executor{
		examples.CalculateTax{},
		examples.OrderValidator{},
		examples.NewPaymentProcessor(cfg.PaymentGatewayDelay),
		examples.NotificationSender{},
		// go run ./cmd/scaffold executor NAME adds new types above this line.
	}
}
