package examples

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gamelan-go/executor/pkg/executor"
)

// orderValidatorType is the executor type of OrderValidator.
const orderValidatorType = "order-validator"

// CodeInvalidOrder is the code of an order-validator task whose orderId is
// missing, not a string, or does not start with "ORDER-".
const CodeInvalidOrder = "INVALID_ORDER"

// orderIDPrefix is what every valid order id starts with.
const orderIDPrefix = "ORDER-"

// OrderValidator accepts an order when the input variable "orderId" is a
// string starting with "ORDER-", and outputs {"valid": true, "validatedAt":
// <UTC time, RFC 3339>}. Any other orderId fails the task with INVALID_ORDER
// and the value received in the error context under "orderId" (nil when it
// was missing). It is stateless and safe for concurrent use.
type OrderValidator struct{}

var _ executor.Executor = OrderValidator{}

// Descriptor declares order-validator, served over gRPC, 20 tasks at once.
func (OrderValidator) Descriptor() executor.Descriptor {
	return executor.Descriptor{
		Type:               orderValidatorType,
		CommunicationType:  executor.GRPC,
		MaxConcurrentTasks: 20,
		SupportedNodeTypes: []string{orderValidatorType},
		Version:            "1.0.0",
	}
}

// Execute validates the task's order id.
func (OrderValidator) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	received, present := task.Context["orderId"]
	orderID, isString := received.(string)
	var problem string
	switch {
	case !present || received == nil:
		problem = `"orderId" is missing`
	case !isString:
		problem = fmt.Sprintf(`"orderId" is not a string: %T`, received)
	case !strings.HasPrefix(orderID, orderIDPrefix):
		problem = fmt.Sprintf(`"orderId" %q does not start with %q`, orderID, orderIDPrefix)
	default:
		return executor.Success(map[string]any{
			"valid":       true,
			"validatedAt": time.Now().UTC().Format(time.RFC3339),
		}), nil
	}
	return executor.FailureWithContext(CodeInvalidOrder, problem, map[string]any{"orderId": received}), nil
}
