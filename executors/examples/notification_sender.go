package examples

import (
	"context"

	"github.com/gamelan-go/executor/pkg/executor"
)

// notificationSenderType is the executor type of NotificationSender.
const notificationSenderType = "notification-sender"

// NotificationSender pretends to send the input variable "message" to
// "recipient", both non-empty strings, and outputs {"sent": true,
// "recipient"}. A missing, empty or non-string input fails the task with
// INVALID_INPUT. It is stateless and safe for concurrent use.
type NotificationSender struct{}

var _ executor.Executor = NotificationSender{}

// Descriptor declares notification-sender, served over gRPC with the default
// concurrency.
func (NotificationSender) Descriptor() executor.Descriptor {
	return executor.Descriptor{
		Type:               notificationSenderType,
		CommunicationType:  executor.GRPC,
		SupportedNodeTypes: []string{notificationSenderType},
		Version:            "1.0.0",
	}
}

// Execute sends the notification.
func (NotificationSender) Execute(_ context.Context, task *executor.Task) (*executor.Result, error) {
	recipient, err := executor.String(task.Context, "recipient")
	if err != nil {
		return executor.Failure(executor.CodeInvalidInput, err.Error()), nil
	}
	if _, err := executor.String(task.Context, "message"); err != nil {
		return executor.Failure(executor.CodeInvalidInput, err.Error()), nil
	}
	return executor.Success(map[string]any{
		"sent":      true,
		"recipient": recipient,
	}), nil
}
