package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/executor"
)

func TestREADMEConfigurationTableIsCurrent(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	require.NoError(t, err)
	assert.True(t, strings.Contains(string(readme), VariablesTable()),
		"the README's configuration table is stale: paste the output of `go run ./cmd/executor -variables`")
}

func TestTransportKind(t *testing.T) {
	grpc := domain.Descriptor{Type: "a", CommunicationType: domain.CommunicationGRPC}
	kafka := domain.Descriptor{Type: "b", CommunicationType: domain.CommunicationKafka}
	unpinned := domain.Descriptor{Type: "c"}
	rest := domain.Descriptor{Type: "d", CommunicationType: domain.CommunicationREST}
	cases := []struct {
		name      string
		transport string
		overrides map[string]string
		desc      domain.Descriptor
		want      string
	}{
		{"memory mode serves every type", "memory", nil, kafka, "memory"},
		{"override wins over memory mode", "memory", map[string]string{"b": "grpc"}, kafka, "grpc"},
		{"memory mode wins over the declared type", "memory", nil, grpc, "memory"},
		{"declared type is pinned when its transport is built", "kafka", nil, grpc, "grpc"},
		{"declared type is pinned: kafka", "grpc", nil, kafka, "kafka"},
		{"declared type is pinned: rest", "grpc", nil, rest, "rest"},
		{"override wins over declared", "memory", map[string]string{"a": "grpc"}, grpc, "grpc"},
		{"unpinned type takes the default", "kafka", nil, unpinned, "kafka"},
	}
	for _, c := range cases {
		cfg := config.Config{Transport: c.transport, TransportOverrides: c.overrides}
		assert.Equal(t, c.want, transportKind(cfg, c.desc), c.name)
	}
}

func TestRegistrationDescribesTheExecutor(t *testing.T) {
	cfg := config.Config{Name: "tax-service", Version: "2.3.0"}
	ex := fixedExecutor{domain.Descriptor{Type: "calculate-tax", CommunicationType: domain.CommunicationGRPC}}
	reg := registration(cfg, ex, "kafka", "host-1")
	assert.Equal(t, "tax-service-calculate-tax", reg.ExecutorID)
	assert.Equal(t, domain.CommunicationKafka, reg.CommunicationType, "the transport actually serving the type is registered")
	assert.Equal(t, map[string]string{"name": "tax-service", "version": "2.3.0", "host": "host-1"}, reg.Metadata)
}

func TestEnabledExecutors(t *testing.T) {
	hosted := []executor.Executor{fixedExecutor{domain.Descriptor{Type: "a"}}, fixedExecutor{domain.Descriptor{Type: "b"}}}
	all, err := enabledExecutors(config.Config{}, hosted)
	require.NoError(t, err)
	assert.Len(t, all, 2)
	some, err := enabledExecutors(config.Config{EnabledTypes: []string{"b"}}, hosted)
	require.NoError(t, err)
	require.Len(t, some, 1)
	assert.Equal(t, "b", some[0].Descriptor().Type)
	_, err = enabledExecutors(config.Config{EnabledTypes: []string{"z"}}, hosted)
	assert.ErrorContains(t, err, "GAMELAN_EXECUTOR_ENABLED_TYPES")
}

type fixedExecutor struct{ desc domain.Descriptor }

func (f fixedExecutor) Descriptor() domain.Descriptor { return f.desc }
func (fixedExecutor) Execute(context.Context, *domain.Task) (*domain.Result, error) {
	return &domain.Result{Status: domain.StatusCompleted}, nil
}
