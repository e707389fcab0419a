package service

import (
	"github.com/gamelan-go/executor/executors"
	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/pkg/executor"
)

// hostedExecutors is the service's list of executor types (executors.Hosted,
// the one list a fork edits), given their settings from the configuration.
func hostedExecutors(cfg config.Config) []executor.Executor {
	return executors.Hosted(executors.Config{PaymentGatewayDelay: cfg.PaymentGatewayDelay})
}
