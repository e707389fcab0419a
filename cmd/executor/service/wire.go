//go:build wireinject

package service

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/gamelan-go/executor/internal/telemetry"
	"github.com/gamelan-go/executor/pkg/executor"
)

// initService builds the service with the transports the settings select.
// Each technology's set builds its shared resources only when the plan uses
// them, and the cleanup closes everything in the reverse order of the graph.
func initService(s *settings, executors []executor.Executor, log *slog.Logger) (*Service, func(), error) {
	wire.Build(newPlan, securitySet, grpcSet, kafkaSet, restSet, memorySet, newWiring,
		newTransports, newControlPlane, telemetry.NewMetrics, newProbes, newRuntime, newService)
	return nil, nil, nil
}

// initServiceWithPorts builds the service around ports the caller supplies
// (component tests pass in-memory or mock ports).
func initServiceWithPorts(s *settings, executors []executor.Executor, log *slog.Logger, given Ports) (*Service, func(), error) {
	wire.Build(newGivenPlan, givenDeployment, givenControlPlane, telemetry.NewMetrics, newProbes, newRuntime, newService)
	return nil, nil, nil
}
