package examples

import (
	"context"

	"github.com/gamelan-go/executor/pkg/executor"
)

// calculateTaxType is the executor type of CalculateTax.
const calculateTaxType = "calculate-tax"

// taxRate is the flat rate the Java example applies.
const taxRate = 0.1

// CalculateTax computes a flat 10% tax on the input variable "amount", given
// as a JSON number or a numeric string. It outputs {"amount", "tax"} as
// numbers. A missing or non-numeric amount fails the task with
// INVALID_INPUT; any finite number, negative ones included, is taxed as it
// is. It is stateless and safe for concurrent use.
type CalculateTax struct{}

var _ executor.Executor = CalculateTax{}

// Descriptor declares calculate-tax, served over gRPC with the default
// concurrency.
func (CalculateTax) Descriptor() executor.Descriptor {
	return executor.Descriptor{
		Type:               calculateTaxType,
		CommunicationType:  executor.GRPC,
		SupportedNodeTypes: []string{calculateTaxType},
		Version:            "1.0.0",
	}
}

// Execute taxes the task's amount.
func (CalculateTax) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	amount, err := executor.Number(task.Context, "amount")
	if err != nil {
		return executor.Failure(executor.CodeInvalidInput, err.Error()), nil
	}
	return executor.Success(map[string]any{
		"amount": amount,
		"tax":    amount * taxRate,
	}), nil
}
