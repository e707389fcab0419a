package service

import (
	"github.com/gamelan-go/executor/cmd/executor/examples"
	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/pkg/executor"
)

// hostedExecutors lists every executor type this service can host. A fork
// replaces the examples with its own handlers here; GAMELAN_EXECUTOR_ENABLED_TYPES
// then chooses which of them a deployment serves.
func hostedExecutors(cfg config.Config) []executor.Executor {
	return examples.All(examples.Config{PaymentGatewayDelay: cfg.PaymentGatewayDelay})
}
