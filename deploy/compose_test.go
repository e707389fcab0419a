package deploy

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loadCompose loads a Compose file as `docker compose` does, schema
// validation included (unknown keys are errors), without reading the
// caller's environment so that the result does not depend on the machine.
func loadCompose(t *testing.T, path string) (*types.Project, error) {
	t.Helper()
	options, err := cli.NewProjectOptions([]string{path},
		cli.WithWorkingDirectory(filepath.Dir(path)), cli.WithName("gamelan"))
	require.NoError(t, err)
	return cli.ProjectFromOptions(context.Background(), options)
}

func TestComposeFileLoadsAndServesTheStackTheREADMEDescribes(t *testing.T) {
	project, err := loadCompose(t, "compose.yaml")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"devengine", "executor-grpc", "executor-kafka"}, project.ServiceNames())

	engine := project.Services["devengine"]
	assert.Equal(t, "gamelan-devengine", engine.Image)
	assert.Equal(t, "devengine", value(engine.Environment, "DEVENGINE_KAFKA_ADVERTISED_HOST"),
		"the embedded broker must advertise an address the executors reach")
	assert.Equal(t, []string{"8080:8080"}, published(engine))

	grpc := project.Services["executor-grpc"]
	assert.Equal(t, "grpc", value(grpc.Environment, "GAMELAN_EXECUTOR_TRANSPORT"))
	assert.Equal(t, "devengine:9000", value(grpc.Environment, "GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET"))
	assert.Equal(t, "executor-grpc:9090", value(grpc.Environment, "GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT"))
	assert.Equal(t, []string{"8090:8090"}, published(grpc))

	kafka := project.Services["executor-kafka"]
	assert.Equal(t, "kafka", value(kafka.Environment, "GAMELAN_EXECUTOR_TRANSPORT"))
	assert.Equal(t, "devengine:9092", value(kafka.Environment, "GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"))
	assert.Equal(t, []string{"8091:8090"}, published(kafka))

	for _, name := range []string{"executor-grpc", "executor-kafka"} {
		service := project.Services[name]
		assert.Equal(t, "gamelan-executor", service.Image, name)
		assert.Contains(t, service.DependsOn, "devengine", name)
		require.NotNil(t, service.HealthCheck, name)
		port := value(service.Environment, "GAMELAN_EXECUTOR_HTTP_PORT")
		assert.Equal(t, types.HealthCheckTest{"CMD", "/executor", "-healthcheck", "http://127.0.0.1:" + port + "/q/health/ready"},
			service.HealthCheck.Test, "%s probes its own readiness with its own binary (no shell in the image)", name)

		// Compose's stop_grace_period is the grace period: it must hold the
		// drain and the flush, and be the one the executor is told.
		require.NotNil(t, service.StopGracePeriod, name)
		grace := time.Duration(*service.StopGracePeriod)
		assert.GreaterOrEqual(t, grace, seconds(t, service.Environment, "GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS")+
			seconds(t, service.Environment, "GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS"), name)
		assert.Equal(t, grace, seconds(t, service.Environment, "GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS"), name)

		for variable := range service.Environment {
			assert.Contains(t, executorVariables(), variable, "%s sets a variable the executor does not read", name)
		}
	}
	for variable := range engine.Environment {
		assert.Contains(t, devengineVariables, variable, "devengine sets a variable it does not read")
	}
	for name, service := range project.Services {
		require.NotNil(t, service.Build, "%s: built from the repository's Dockerfiles", name)
		assert.FileExists(t, filepath.Join(service.Build.Context, service.Build.Dockerfile), "%s builds from a Dockerfile the repository holds", name)
	}
}

func TestComposeLoaderRejectsUnknownKeys(t *testing.T) {
	original, err := os.ReadFile("compose.yaml")
	require.NoError(t, err)
	// A misspelt key under a service: the check the test above relies on.
	broken := strings.Replace(string(original), "    stop_grace_period: 45s\n", "    stop_grace_periods: 45s\n", 1)
	require.NotEqual(t, string(original), broken)
	path := filepath.Join(t.TempDir(), "compose.yaml")
	require.NoError(t, os.WriteFile(path, []byte(broken), 0o600))
	_, err = loadCompose(t, path)
	assert.ErrorContains(t, err, "stop_grace_periods")
}

// devengineVariables are the DEVENGINE_* variables the reference engine
// reads (internal/devengine, parseOptions).
var devengineVariables = []string{
	"DEVENGINE_HTTP_ADDR", "DEVENGINE_GRPC_ADDR", "DEVENGINE_KAFKA_ADDR", "DEVENGINE_KAFKA_ADVERTISED_HOST", "DEVENGINE_KAFKA_BROKERS",
	"DEVENGINE_HEARTBEAT_EXPIRY_SECONDS", "DEVENGINE_JWT_SECRET", "DEVENGINE_EXECUTOR_ISSUER",
	"DEVENGINE_EXECUTOR_AUDIENCE", "DEVENGINE_LOG_LEVEL",
}

// value is a variable of a service's environment, "" when unset.
func value(environment types.MappingWithEquals, name string) string {
	if v := environment[name]; v != nil {
		return *v
	}
	return ""
}

// seconds is a _SECONDS variable as a duration.
func seconds(t *testing.T, environment types.MappingWithEquals, name string) time.Duration {
	t.Helper()
	n, err := strconv.Atoi(value(environment, name))
	require.NoError(t, err, name)
	return time.Duration(n) * time.Second
}

// published lists a service's ports as published:target.
func published(service types.ServiceConfig) []string {
	var ports []string
	for _, p := range service.Ports {
		ports = append(ports, p.Published+":"+strconv.Itoa(int(p.Target)))
	}
	return ports
}
