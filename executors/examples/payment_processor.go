package examples

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/gamelan-go/executor/pkg/executor"
)

// paymentProcessorType is the executor type of PaymentProcessor.
const paymentProcessorType = "payment-processor"

// CodeInvalidPayment is the code of a payment-processor task whose
// totalAmount is missing, non-numeric or not positive, or whose customerId
// is missing or empty.
const CodeInvalidPayment = "INVALID_PAYMENT"

// PaymentProcessor simulates charging a customer through a slow payment
// gateway. Inputs: "totalAmount" (a number or numeric string, above zero) and
// "customerId" (a non-empty string). It validates them first, failing the
// task with INVALID_PAYMENT without waiting (the Java example crashed on bad
// input instead), then waits the gateway delay and outputs
// {"transactionId": "TXN-<uuid>", "status": "COMPLETED", "amount",
// "customerId"}. The wait ends as soon as the task's context does, so a task
// whose timeout is shorter than the delay fails with TIMEOUT and a cancelled
// one is reported CANCELLED. It is safe for concurrent use.
type PaymentProcessor struct {
	gatewayDelay time.Duration
}

var _ executor.Executor = (*PaymentProcessor)(nil)

// NewPaymentProcessor returns a PaymentProcessor whose simulated gateway
// answers after gatewayDelay; zero or less means at once.
func NewPaymentProcessor(gatewayDelay time.Duration) *PaymentProcessor {
	return &PaymentProcessor{gatewayDelay: gatewayDelay}
}

// Descriptor declares payment-processor, served over Kafka, 10 tasks at once.
func (p *PaymentProcessor) Descriptor() executor.Descriptor {
	return executor.Descriptor{
		Type:               paymentProcessorType,
		CommunicationType:  executor.Kafka,
		MaxConcurrentTasks: 10,
		SupportedNodeTypes: []string{paymentProcessorType},
		Version:            "1.0.0",
	}
}

// Execute validates the payment, waits for the simulated gateway and returns
// the transaction. It returns ctx's error when ctx ends during the wait.
func (p *PaymentProcessor) Execute(ctx context.Context, task *executor.Task) (*executor.Result, error) {
	amount, err := executor.Number(task.Context, "totalAmount")
	if err != nil {
		return executor.Failure(CodeInvalidPayment, err.Error()), nil
	}
	if amount <= 0 {
		return executor.Failure(CodeInvalidPayment, fmt.Sprintf(`"totalAmount" must be above zero: %v`, amount)), nil
	}
	customerID, err := executor.String(task.Context, "customerId")
	if err != nil {
		return executor.Failure(CodeInvalidPayment, err.Error()), nil
	}
	if err := p.waitForGateway(ctx); err != nil {
		return nil, err
	}
	return executor.Success(map[string]any{
		"transactionId": "TXN-" + uuid.NewString(),
		"status":        "COMPLETED",
		"amount":        amount,
		"customerId":    customerID,
	}), nil
}

// waitForGateway blocks for the gateway delay, or until ctx ends, in which
// case it returns ctx's error.
func (p *PaymentProcessor) waitForGateway(ctx context.Context) error {
	if p.gatewayDelay <= 0 {
		return nil
	}
	gateway := time.NewTimer(p.gatewayDelay)
	defer gateway.Stop()
	select {
	case <-gateway.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
