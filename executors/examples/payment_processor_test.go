package examples

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/pkg/executor/executortest"
)

// slowGateway is a delay no test waits for: a test that completes with it
// has proved that the wait ended early.
const slowGateway = time.Hour

// promptly bounds how long a test waits for something that should happen at
// once; it is generous so that a loaded CI machine does not flake.
const promptly = 5 * time.Second

func TestPaymentProcessorCompletesWithoutDelay(t *testing.T) {
	h := executortest.New(t, NewPaymentProcessor(0))
	tests := []struct {
		name        string
		totalAmount any
		wantAmount  float64
	}{
		{"JSON number", 99.5, 99.5},
		{"integer", 20, 20},
		{"numeric string from the push path", "150.25", 150.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := executortest.RequireCompleted(t, h.Run(map[string]any{
				"totalAmount": tt.totalAmount,
				"customerId":  "CUST-7",
			}))
			assert.Regexp(t, `^TXN-[0-9a-f-]{36}$`, out["transactionId"])
			assert.Equal(t, "COMPLETED", out["status"])
			assert.Equal(t, tt.wantAmount, out["amount"])
			assert.Equal(t, "CUST-7", out["customerId"])
		})
	}
}

func TestPaymentProcessorIssuesDistinctTransactionIDs(t *testing.T) {
	h := executortest.New(t, NewPaymentProcessor(0))
	vars := map[string]any{"totalAmount": 10.0, "customerId": "CUST-7"}
	first := executortest.RequireCompleted(t, h.Run(vars))["transactionId"]
	second := executortest.RequireCompleted(t, h.Run(vars))["transactionId"]
	assert.NotEqual(t, first, second)
}

// TestPaymentProcessorRejectsBadInputBeforeWaiting gives the task a timeout
// far below the gateway delay: validation that waited for the gateway first
// would report TIMEOUT instead of INVALID_PAYMENT.
func TestPaymentProcessorRejectsBadInputBeforeWaiting(t *testing.T) {
	h := executortest.New(t, NewPaymentProcessor(slowGateway))
	tests := []struct {
		name        string
		vars        map[string]any
		wantMessage string
	}{
		{"no variables", map[string]any{}, `"totalAmount" is missing`},
		{"missing amount", map[string]any{"customerId": "CUST-7"}, `"totalAmount" is missing`},
		{"non-numeric amount", map[string]any{"totalAmount": "lots", "customerId": "CUST-7"}, `"totalAmount" is not a number`},
		{"boolean amount", map[string]any{"totalAmount": true, "customerId": "CUST-7"}, `"totalAmount" is not a number`},
		{"zero amount", map[string]any{"totalAmount": 0.0, "customerId": "CUST-7"}, `"totalAmount" must be above zero`},
		{"negative amount string", map[string]any{"totalAmount": "-5", "customerId": "CUST-7"}, `"totalAmount" must be above zero`},
		{"missing customer", map[string]any{"totalAmount": 10.0}, `"customerId" is missing`},
		{"empty customer", map[string]any{"totalAmount": 10.0, "customerId": ""}, `"customerId" is empty`},
		{"numeric customer", map[string]any{"totalAmount": 10.0, "customerId": 7.0}, `"customerId" is not a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := executortest.NewTask(paymentProcessorType, tt.vars)
			task.Timeout = promptly
			info := executortest.RequireFailed(t, h.Execute(context.Background(), task), CodeInvalidPayment)
			assert.Contains(t, info.Message, tt.wantMessage)
		})
	}
}

func TestPaymentProcessorTimesOutWhenTheGatewayIsSlowerThanTheTask(t *testing.T) {
	h := executortest.New(t, NewPaymentProcessor(slowGateway))
	task := executortest.NewTask(paymentProcessorType, map[string]any{"totalAmount": 10.0, "customerId": "CUST-7"})
	task.Timeout = 20 * time.Millisecond

	info := executortest.RequireFailed(t, h.Execute(context.Background(), task), executor.CodeTimeout)
	assert.True(t, info.Retryable, "a timeout may succeed on another attempt")
}

func TestPaymentProcessorIsCancelledWhileWaiting(t *testing.T) {
	h := executortest.New(t, NewPaymentProcessor(slowGateway))
	task := executortest.NewTask(paymentProcessorType, map[string]any{"totalAmount": 10.0, "customerId": "CUST-7"})
	ctx, cancel := context.WithCancelCause(context.Background())

	results := make(chan executor.Result, 1)
	go func() { results <- h.Execute(ctx, task) }()
	cancel(&executor.Error{Code: executor.CodeCancelled, Message: "cancelled by the engine"})

	select {
	case res := <-results:
		assert.Equal(t, executor.StatusCancelled, res.Status)
		require.NotNil(t, res.Error)
		assert.Equal(t, executor.CodeCancelled, res.Error.Code)
	case <-time.After(promptly):
		t.Fatal("the cancelled task did not end")
	}
}

// TestPaymentProcessorWaitEndsWithItsContext calls the handler directly, not
// through the runtime (which abandons a handler whose context has ended), to
// prove that the handler itself stops waiting and returns ctx's error.
func TestPaymentProcessorWaitEndsWithItsContext(t *testing.T) {
	p := NewPaymentProcessor(slowGateway)
	task := executortest.NewTask(paymentProcessorType, map[string]any{"totalAmount": 10.0, "customerId": "CUST-7"})
	ctx, cancel := context.WithCancel(context.Background())

	type outcome struct {
		res *executor.Result
		err error
	}
	outcomes := make(chan outcome, 1)
	go func() {
		res, err := p.Execute(ctx, task)
		outcomes <- outcome{res, err}
	}()
	cancel()

	select {
	case o := <-outcomes:
		assert.Nil(t, o.res)
		assert.ErrorIs(t, o.err, context.Canceled)
	case <-time.After(promptly):
		t.Fatal("Execute kept waiting for the gateway after its context ended")
	}
}
