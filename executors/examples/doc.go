// Package examples holds the example executor types the service hosts out of
// the box, ported from the Gamelan Java SDK examples so that a workflow built
// against the Java executors runs unchanged against this service:
//
//   - calculate-tax (gRPC): {"amount"} -> {"amount", "tax"}, tax being 10%.
//   - order-validator (gRPC, 20 at once): {"orderId"} -> {"valid", "validatedAt"}
//     when the id starts with "ORDER-", else FAILED INVALID_ORDER.
//   - payment-processor (Kafka, 10 at once): {"totalAmount", "customerId"} ->
//     {"transactionId", "status", "amount", "customerId"} after a simulated
//     gateway delay, else FAILED INVALID_PAYMENT.
//   - notification-sender (gRPC): {"recipient", "message"} -> {"sent", "recipient"}.
//
// The handlers read numbers with executor.Number, because the Gamelan push
// path delivers every variable as a string, and report bad input as a FAILED
// result with a code rather than as an error, so that the engine does not
// retry a task that cannot succeed.
//
// They are hosted out of the box (see executors.Hosted), and the project's
// component and end-to-end tests use them as fixtures, through All, whatever
// the service hosts: a fork takes them out of executors.Hosted and keeps the
// package for the tests (docs/forking.md).
package examples

import (
	"time"

	"github.com/gamelan-go/executor/pkg/executor"
)

// Config carries what the example executors need from the service's
// configuration.
type Config struct {
	// PaymentGatewayDelay is how long payment-processor pretends to wait for
	// its payment gateway (PAYMENT_GATEWAY_DELAY). Zero means no wait.
	PaymentGatewayDelay time.Duration
}

// All returns one instance of every example executor type, ready to register
// with the runtime.
func All(cfg Config) []executor.Executor {
	return []executor.Executor{
		CalculateTax{},
		OrderValidator{},
		NewPaymentProcessor(cfg.PaymentGatewayDelay),
		NotificationSender{},
	}
}
