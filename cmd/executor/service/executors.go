package service

import (
	"github.com/gamelan-go/executor/executors"
	"github.com/gamelan-go/executor/pkg/executor"
)

// hostedExecutors is the service's list of executor types (executors.Hosted,
// the one list a fork edits), given their settings from the configuration.
func hostedExecutors(s *settings) []executor.Executor {
	return executors.Hosted(executors.Config{PaymentGatewayDelay: s.PaymentGatewayDelay.Duration()})
}
