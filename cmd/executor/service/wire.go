//go:build wireinject

package service

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/pkg/executor"
)

// initService builds the service with the adapters the configuration selects.
func initService(cfg config.Config, executors []executor.Executor, log *slog.Logger) (*Service, func(), error) {
	wire.Build(newAdapters, selectRegistrar, selectHeartbeater, planTransports, telemetry.NewMetrics, newRuntime, newService)
	return nil, nil, nil
}

// initServiceWithPorts builds the service around ports the caller supplies
// (component tests pass in-memory or mock ports).
func initServiceWithPorts(cfg config.Config, executors []executor.Executor, log *slog.Logger, given Ports) (*Service, func(), error) {
	wire.Build(givenRegistrar, givenHeartbeater, planWithPorts, telemetry.NewMetrics, newRuntime, newService)
	return nil, nil, nil
}
