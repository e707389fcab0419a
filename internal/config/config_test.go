package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// environment returns a getenv that answers from vars and records every
// name asked, so that tests can check the environment is read only once.
func environment(vars map[string]string) (getenv func(string) string, asked map[string]int) {
	asked = make(map[string]int)
	return func(name string) string {
		asked[name]++
		return vars[name]
	}, asked
}

func load(t *testing.T, vars map[string]string) (Config, error) {
	t.Helper()
	getenv, _ := environment(vars)
	return Load(getenv)
}

func TestLoadDefaultsWithEmptyEnvironment(t *testing.T) {
	getenv, asked := environment(nil)
	cfg, err := Load(getenv)
	require.NoError(t, err)

	for _, v := range Variables() {
		assert.Equal(t, 1, asked[v.Name], "getenv calls for %s", v.Name)
	}
	assert.Len(t, asked, len(Variables()), "getenv asked only for declared variables")

	assert.Equal(t, Config{
		Name:                        "executor",
		Version:                     "1.0.0",
		EngineURL:                   "http://localhost:8080",
		EngineGRPCTarget:            "localhost:9000",
		EngineHTTPTimeoutSeconds:    5,
		Transport:                   "grpc",
		Registrar:                   "grpc",
		GRPCIntake:                  "push",
		GRPCHost:                    "0.0.0.0",
		GRPCPort:                    9090,
		GRPCKeepAliveTimeSeconds:    300,
		GRPCKeepAliveTimeoutSeconds: 20,
		GRPCMaxConcurrentStreams:    1000,
		GRPCFlowControlWindow:       1048576,
		GRPCMaxMessageSize:          4194304,
		RESTHost:                    "0.0.0.0",
		RESTPort:                    8081,
		RESTResultSink:              "grpc",
		RESTMaxBodyBytes:            1048576,
		KafkaBootstrapServers:       []string{"localhost:9092"},
		KafkaGroupID:                "executor",
		KafkaTasksTopic:             "workflow.tasks",
		KafkaResultsTopic:           "workflow-results",
		KafkaRegistrationsTopic:     "executor-registrations",
		KafkaHeartbeatsTopic:        "executor-heartbeats",
		KafkaUnregistrationsTopic:   "executor-unregistrations",
		KafkaMaxMessageBytes:        1048576,
		JWTIssuer:                   "gamelan-executor",
		JWTAudience:                 "gamelan-engine",
		JWTTTLSeconds:               300,
		JWTInboundIssuer:            "gamelan-engine",
		JWTInboundAudience:          "gamelan-executor",
		JWTInbound:                  "required",
		HeartbeatIntervalSeconds:    10,
		HeartbeatTimeoutSeconds:     60,
		ReregisterIntervalSeconds:   60,
		ThreadPoolSize:              50,
		QueueSize:                   1000,
		TaskTimeoutSeconds:          300,
		ShutdownTimeoutSeconds:      30,
		ResultFlushTimeoutSeconds:   10,
		ResultOutboxSize:            1000,
		DedupeCapacity:              10000,
		HTTPHost:                    "0.0.0.0",
		HTTPPort:                    8090,
		LogLevel:                    "info",
		LogFormat:                   "json",
		PaymentGatewayDelay:         2 * time.Second,
	}, cfg)

	assert.Empty(t, cfg.TransportOverrides)
	assert.Empty(t, cfg.EnabledTypes)
	assert.True(t, cfg.TypeEnabled("anything"))
	assert.Equal(t, 300*time.Second, cfg.GRPCKeepAliveTime())
	assert.Equal(t, 20*time.Second, cfg.GRPCKeepAliveTimeout())
	assert.Equal(t, 5*time.Minute, cfg.JWTTTL())
	assert.Equal(t, 10*time.Second, cfg.HeartbeatInterval())
	assert.Equal(t, time.Minute, cfg.HeartbeatTimeout())
	assert.Equal(t, time.Minute, cfg.ReregisterInterval())
	assert.Equal(t, 5*time.Minute, cfg.TaskTimeout())
	assert.Equal(t, 30*time.Second, cfg.ShutdownTimeout())
	assert.Equal(t, 10*time.Second, cfg.ResultFlushTimeout())
	assert.Equal(t, slog.LevelInfo, cfg.SlogLevel())
}

func TestLoadReadsEveryVariable(t *testing.T) {
	dir := t.TempDir()
	cert := writeFile(t, dir, "cert.pem", "certificate")
	key := writeFile(t, dir, "key.pem", "key")
	ca := writeFile(t, dir, "ca.pem", "ca")
	secret := strings.Repeat("s", 32)

	cfg, err := load(t, map[string]string{
		"GAMELAN_EXECUTOR_NAME":                            "tax-service",
		"GAMELAN_EXECUTOR_VERSION":                         "2.3.4",
		"GAMELAN_EXECUTOR_INSTANCE_ID":                     "pod-7",
		"GAMELAN_EXECUTOR_ENGINE_URL":                      "https://engine.example:8443/api",
		"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET":              "engine.example:9443",
		"GAMELAN_EXECUTOR_TRANSPORT":                       "memory",
		"GAMELAN_EXECUTOR_REGISTRAR":                       "memory",
		"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":             " calculate-tax = memory ,order-validator=grpc",
		"GAMELAN_EXECUTOR_ENABLED_TYPES":                   "calculate-tax, order-validator",
		"GAMELAN_EXECUTOR_GRPC_INTAKE":                     "bidi",
		"GAMELAN_EXECUTOR_GRPC_HOST":                       "127.0.0.1",
		"GAMELAN_EXECUTOR_GRPC_PORT":                       "0",
		"GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT":        "tax-service:9090",
		"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIME_SECONDS":    "10",
		"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
		"GAMELAN_EXECUTOR_GRPC_MAX_CONCURRENT_STREAMS":     "1",
		"GAMELAN_EXECUTOR_GRPC_FLOW_CONTROL_WINDOW":        "65535",
		"GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE":           "1024",
		"GAMELAN_EXECUTOR_GRPC_USE_SSL":                    "true",
		"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH":           cert,
		"GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH":           key,
		"GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH":        ca,
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS":         "k1:9092, k2:9093",
		"GAMELAN_EXECUTOR_KAFKA_GROUP_ID":                  "tax-group",
		"GAMELAN_EXECUTOR_KAFKA_TASKS_TOPIC":               "t.tasks",
		"GAMELAN_EXECUTOR_KAFKA_RESULTS_TOPIC":             "t.results",
		"GAMELAN_EXECUTOR_KAFKA_REGISTRATIONS_TOPIC":       "t.registrations",
		"GAMELAN_EXECUTOR_KAFKA_HEARTBEATS_TOPIC":          "t.heartbeats",
		"GAMELAN_EXECUTOR_KAFKA_UNREGISTRATIONS_TOPIC":     "t.unregistrations",
		"GAMELAN_EXECUTOR_JWT_SECRET":                      secret,
		"GAMELAN_EXECUTOR_JWT_ISSUER":                      "issuer",
		"GAMELAN_EXECUTOR_JWT_AUDIENCE":                    "audience",
		"GAMELAN_EXECUTOR_JWT_TTL_SECONDS":                 "86400",
		"GAMELAN_EXECUTOR_JWT_INBOUND_ISSUER":              "engine-issuer",
		"GAMELAN_EXECUTOR_JWT_INBOUND_AUDIENCE":            "tax-service",
		"GAMELAN_EXECUTOR_JWT_INBOUND":                     "off",
		"GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS":      "5",
		"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS":       "6",
		"GAMELAN_EXECUTOR_REREGISTER_INTERVAL_SECONDS":     "0",
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE":                "1",
		"GAMELAN_EXECUTOR_QUEUE_SIZE":                      "0",
		"GAMELAN_EXECUTOR_TASK_TIMEOUT_SECONDS":            "1",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS":        "2",
		"GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS":    "3",
		"GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE":              "4",
		"GAMELAN_EXECUTOR_DEDUPE_CAPACITY":                 "5",
		"GAMELAN_EXECUTOR_HTTP_HOST":                       "localhost",
		"GAMELAN_EXECUTOR_HTTP_PORT":                       "65535",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                       "debug",
		"GAMELAN_EXECUTOR_LOG_FORMAT":                      "text",
		"PAYMENT_GATEWAY_DELAY":                            "0s",
	})
	require.NoError(t, err)

	assert.Equal(t, Config{
		Name:                        "tax-service",
		Version:                     "2.3.4",
		InstanceID:                  "pod-7",
		EngineURL:                   "https://engine.example:8443/api",
		EngineGRPCTarget:            "engine.example:9443",
		EngineHTTPTimeoutSeconds:    5,
		Transport:                   "memory",
		Registrar:                   "memory",
		TransportOverrides:          map[string]string{"calculate-tax": "memory", "order-validator": "grpc"},
		EnabledTypes:                []string{"calculate-tax", "order-validator"},
		GRPCIntake:                  "bidi",
		GRPCHost:                    "127.0.0.1",
		GRPCPort:                    0,
		GRPCAdvertisedEndpoint:      "tax-service:9090",
		GRPCKeepAliveTimeSeconds:    10,
		GRPCKeepAliveTimeoutSeconds: 1,
		GRPCMaxConcurrentStreams:    1,
		GRPCFlowControlWindow:       65535,
		GRPCMaxMessageSize:          1024,
		GRPCUseSSL:                  true,
		GRPCCertificatePath:         cert,
		GRPCPrivateKeyPath:          key,
		GRPCCACertificatePath:       ca,
		RESTHost:                    "0.0.0.0",
		RESTPort:                    8081,
		RESTResultSink:              "grpc",
		RESTMaxBodyBytes:            1048576,
		KafkaBootstrapServers:       []string{"k1:9092", "k2:9093"},
		KafkaGroupID:                "tax-group",
		KafkaTasksTopic:             "t.tasks",
		KafkaResultsTopic:           "t.results",
		KafkaRegistrationsTopic:     "t.registrations",
		KafkaHeartbeatsTopic:        "t.heartbeats",
		KafkaUnregistrationsTopic:   "t.unregistrations",
		KafkaMaxMessageBytes:        1048576,
		JWTSecret:                   secret,
		JWTIssuer:                   "issuer",
		JWTAudience:                 "audience",
		JWTTTLSeconds:               86400,
		JWTInboundIssuer:            "engine-issuer",
		JWTInboundAudience:          "tax-service",
		JWTInbound:                  "off",
		HeartbeatIntervalSeconds:    5,
		HeartbeatTimeoutSeconds:     6,
		ReregisterIntervalSeconds:   0,
		ThreadPoolSize:              1,
		QueueSize:                   0,
		TaskTimeoutSeconds:          1,
		ShutdownTimeoutSeconds:      2,
		ResultFlushTimeoutSeconds:   3,
		ResultOutboxSize:            4,
		DedupeCapacity:              5,
		HTTPHost:                    "localhost",
		HTTPPort:                    65535,
		LogLevel:                    "debug",
		LogFormat:                   "text",
		PaymentGatewayDelay:         0,
	}, cfg)
	assert.Zero(t, cfg.ReregisterInterval(), "0 disables periodic re-registration")
	assert.Equal(t, slog.LevelDebug, cfg.SlogLevel())
	assert.True(t, cfg.TypeEnabled("calculate-tax"))
	assert.False(t, cfg.TypeEnabled("other"))
}

func TestLoadRejectsBadValues(t *testing.T) {
	dir := t.TempDir()
	cert := writeFile(t, dir, "cert.pem", "certificate")
	empty := writeFile(t, dir, "empty.pem", "")
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		variable string
		value    string
		extra    map[string]string
		want     string
	}{
		{"GAMELAN_EXECUTOR_NAME", "has space", nil, `GAMELAN_EXECUTOR_NAME="has space": must be 1-64 characters of a-z, A-Z, 0-9, _ and -`},
		{"GAMELAN_EXECUTOR_NAME", strings.Repeat("n", 65), nil, "must be 1-64 characters"},
		{"GAMELAN_EXECUTOR_VERSION", "  ", nil, `GAMELAN_EXECUTOR_VERSION="  ": must not be blank`},
		{"GAMELAN_EXECUTOR_INSTANCE_ID", "pod/7", nil, `GAMELAN_EXECUTOR_INSTANCE_ID="pod/7": must be 1-64 characters`},
		{"GAMELAN_EXECUTOR_ENGINE_URL", "localhost:8080", nil, "must be an absolute http or https URL with a host"},
		{"GAMELAN_EXECUTOR_ENGINE_URL", "ftp://engine", nil, "must be an absolute http or https URL"},
		{"GAMELAN_EXECUTOR_ENGINE_URL", "http:///path", nil, "must be an absolute http or https URL"},
		{"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET", "engine", nil, "must be host:port with a port from 1 to 65535"},
		{"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET", "engine:0", nil, "must be host:port"},
		{"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET", "engine:70000", nil, "must be host:port"},
		{"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET", ":9000", nil, "must be host:port"},
		{"GAMELAN_EXECUTOR_TRANSPORT", "carrier-pigeon", nil, `GAMELAN_EXECUTOR_TRANSPORT="carrier-pigeon": must be one of grpc, kafka, memory, rest`},
		{"GAMELAN_EXECUTOR_REGISTRAR", "rest", nil, `GAMELAN_EXECUTOR_REGISTRAR="rest": must be one of grpc, http, kafka, memory`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=memory,b", nil, `GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES="a=memory,b": pair "b" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "=memory", nil, `pair "=memory" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=", nil, `pair "a=" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=memory,,b=memory", nil, `pair "" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=memory,a=memory", nil, `type "a" must appear only once`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=http", nil, `transport "http" of type "a" must be one of grpc, kafka, memory, rest`},
		{"GAMELAN_EXECUTOR_ENABLED_TYPES", "a,,b", nil, `GAMELAN_EXECUTOR_ENABLED_TYPES="a,,b": must be a comma-separated list without empty items`},
		{"GAMELAN_EXECUTOR_GRPC_INTAKE", "pull", nil, "must be one of push, stream, bidi"},
		{"GAMELAN_EXECUTOR_GRPC_HOST", " ", nil, "must not be blank"},
		{"GAMELAN_EXECUTOR_GRPC_PORT", "-1", nil, `GAMELAN_EXECUTOR_GRPC_PORT="-1": must be a whole number of at least 0 and at most 65535`},
		{"GAMELAN_EXECUTOR_GRPC_PORT", "65536", nil, "must be a whole number of at least 0 and at most 65535"},
		{"GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT", "host-only", nil, "must be host:port"},
		{"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIME_SECONDS", "9", nil, "must be a whole number of at least 10"},
		{"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIMEOUT_SECONDS", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_GRPC_MAX_CONCURRENT_STREAMS", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_GRPC_FLOW_CONTROL_WINDOW", "65534", nil, "must be a whole number of at least 65535"},
		{"GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE", "1023", nil, "must be a whole number of at least 1024"},
		{"GAMELAN_EXECUTOR_GRPC_USE_SSL", "yes", nil, `GAMELAN_EXECUTOR_GRPC_USE_SSL="yes": must be true or false`},
		{"GAMELAN_EXECUTOR_GRPC_USE_SSL", "true", nil, "requires GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH and GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH to be set"},
		{"GAMELAN_EXECUTOR_GRPC_USE_SSL", "true", map[string]string{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH": cert}, "requires"},
		{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH", missing, nil, fmt.Sprintf("GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH=%q: cannot read: open %s: no such file or directory", missing, missing)},
		{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH", dir, nil, "cannot read: not a regular file"},
		{"GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH", empty, nil, "cannot read: the file is empty"},
		{"GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH", missing, nil, "cannot read: open"},
		{"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH", missing, nil, "cannot read: open"},
		{"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH", cert, nil, "must be set together with GRPC_CLIENT_PRIVATE_KEY_PATH"},
		{"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM", "GSSAPI", nil, "must be one of"},
		{"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM", "PLAIN", nil, "GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME=\"\": must be set when"},
		{"GAMELAN_EXECUTOR_KAFKA_CLIENT_CERTIFICATE_PATH", cert, nil, "must be set together with KAFKA_CLIENT_PRIVATE_KEY_PATH"},
		{"GAMELAN_EXECUTOR_KAFKA_CA_CERTIFICATE_PATH", missing, nil, "cannot read: open"},
		{"GAMELAN_EXECUTOR_KAFKA_MAX_MESSAGE_BYTES", "100", nil, "must be a whole number of at least 65536"},
		{"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2", nil, `server "k2" must be host:port`},
		{"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,", nil, "must be a comma-separated list without empty items"},
		{"GAMELAN_EXECUTOR_KAFKA_TASKS_TOPIC", "tasks topic", nil, "must be a Kafka topic name"},
		{"GAMELAN_EXECUTOR_KAFKA_RESULTS_TOPIC", "..", nil, "must be a Kafka topic name"},
		{"GAMELAN_EXECUTOR_KAFKA_REGISTRATIONS_TOPIC", strings.Repeat("r", 250), nil, "must be a Kafka topic name"},
		{"GAMELAN_EXECUTOR_KAFKA_HEARTBEATS_TOPIC", "héartbeats", nil, "must be a Kafka topic name"},
		{"GAMELAN_EXECUTOR_KAFKA_UNREGISTRATIONS_TOPIC", "a/b", nil, "must be a Kafka topic name"},
		{"GAMELAN_EXECUTOR_JWT_SECRET", "short", nil, "GAMELAN_EXECUTOR_JWT_SECRET=[redacted, 5 bytes]: must be empty (no tokens) or at least 32 bytes for HS256"},
		{"GAMELAN_EXECUTOR_JWT_ISSUER", "\t", nil, "must not be blank"},
		{"GAMELAN_EXECUTOR_JWT_AUDIENCE", " ", nil, "must not be blank"},
		{"GAMELAN_EXECUTOR_JWT_TTL_SECONDS", "29", nil, "must be a whole number of at least 30 and at most 86400"},
		{"GAMELAN_EXECUTOR_JWT_TTL_SECONDS", "86401", nil, "must be a whole number of at least 30 and at most 86400"},
		{"GAMELAN_EXECUTOR_JWT_INBOUND", "optional", nil, "must be one of required, off"},
		{"GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS", "60", nil, `GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS="60": must be below GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS (60)`},
		{"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS", "5", nil, `GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS="10": must be below GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS (5)`},
		{"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS", "0", nil, `GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS="0": must be a whole number of at least 1`},
		{"GAMELAN_EXECUTOR_REREGISTER_INTERVAL_SECONDS", "-1", nil, "must be a whole number of at least 0"},
		{"GAMELAN_EXECUTOR_THREAD_POOL_SIZE", "-3", nil, `GAMELAN_EXECUTOR_THREAD_POOL_SIZE="-3": must be a whole number of at least 1`},
		{"GAMELAN_EXECUTOR_QUEUE_SIZE", "-1", nil, "must be a whole number of at least 0"},
		{"GAMELAN_EXECUTOR_TASK_TIMEOUT_SECONDS", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_TASK_TIMEOUT_SECONDS", "31536001", nil, "at most 31536000"},
		{"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_DEDUPE_CAPACITY", "0", nil, "must be a whole number of at least 1"},
		{"GAMELAN_EXECUTOR_HTTP_HOST", " ", nil, "must not be blank"},
		{"GAMELAN_EXECUTOR_HTTP_PORT", "70000", nil, "must be a whole number of at least 0 and at most 65535"},
		{"GAMELAN_EXECUTOR_LOG_LEVEL", "INFO", nil, `GAMELAN_EXECUTOR_LOG_LEVEL="INFO": must be one of debug, info, warn, error`},
		{"GAMELAN_EXECUTOR_LOG_FORMAT", "xml", nil, "must be one of json, text"},
		{"PAYMENT_GATEWAY_DELAY", "-1s", nil, `PAYMENT_GATEWAY_DELAY="-1s": must be a Go duration of at least 0`},
		{"PAYMENT_GATEWAY_DELAY", "2", nil, `PAYMENT_GATEWAY_DELAY="2": must be a Go duration of at least 0`},
	}
	for _, tt := range tests {
		t.Run(tt.variable+"="+tt.value, func(t *testing.T) {
			vars := map[string]string{tt.variable: tt.value}
			for k, v := range tt.extra {
				vars[k] = v
			}
			cfg, err := load(t, vars)
			require.Error(t, err)
			assert.Zero(t, cfg, "no partial Config on error")
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

func TestLoadReportsUnparsableValueAsOneLine(t *testing.T) {
	for _, tt := range []struct{ variable, value, want string }{
		{"GAMELAN_EXECUTOR_THREAD_POOL_SIZE", "abc", `GAMELAN_EXECUTOR_THREAD_POOL_SIZE="abc": must be a whole number of at least 1`},
		{"GAMELAN_EXECUTOR_GRPC_PORT", "9090x", `GAMELAN_EXECUTOR_GRPC_PORT="9090x": must be a whole number of at least 0 and at most 65535`},
		{"GAMELAN_EXECUTOR_QUEUE_SIZE", "99999999999", `GAMELAN_EXECUTOR_QUEUE_SIZE="99999999999": must be a whole number of at least 0`},
		{"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS", "1.5", `GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS="1.5": must be a whole number of at least 1 and at most 31536000`},
		{"PAYMENT_GATEWAY_DELAY", "soon", `PAYMENT_GATEWAY_DELAY="soon": must be a Go duration of at least 0, such as 2s, 500ms or 1m30s`},
	} {
		t.Run(tt.variable, func(t *testing.T) {
			_, err := load(t, map[string]string{tt.variable: tt.value})
			require.Error(t, err)
			assert.Equal(t, tt.want, err.Error())
		})
	}
}

func TestLoadReportsFirstWrongVariableInStructOrder(t *testing.T) {
	_, err := load(t, map[string]string{
		"PAYMENT_GATEWAY_DELAY":             "soon",
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE": "abc",
		"GAMELAN_EXECUTOR_LOG_FORMAT":       "xml",
		"GAMELAN_EXECUTOR_TRANSPORT":        "carrier-pigeon",
	})
	require.Error(t, err)
	assert.Equal(t, `GAMELAN_EXECUTOR_TRANSPORT="carrier-pigeon": must be one of grpc, kafka, memory, rest`, err.Error())

	_, err = load(t, map[string]string{
		"PAYMENT_GATEWAY_DELAY":             "soon",
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE": "abc",
	})
	require.Error(t, err)
	assert.Equal(t, `GAMELAN_EXECUTOR_THREAD_POOL_SIZE="abc": must be a whole number of at least 1`, err.Error())
}

func TestLoadDoesNotBlameHeartbeatIntervalForUnparsableTimeout(t *testing.T) {
	_, err := load(t, map[string]string{"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS": "never"})
	require.Error(t, err)
	assert.Equal(t, `GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS="never": must be a whole number of at least 1 and at most 31536000`, err.Error())
}

func TestLoadDefaultsKafkaGroupToName(t *testing.T) {
	cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_NAME": "payments"})
	require.NoError(t, err)
	assert.Equal(t, "payments", cfg.KafkaGroupID)
}

func TestLoadRejectsNilGetenv(t *testing.T) {
	_, err := Load(nil)
	require.Error(t, err)
}

func TestLoadAcceptsReadableCertificateFiles(t *testing.T) {
	dir := t.TempDir()
	cfg, err := load(t, map[string]string{
		"GAMELAN_EXECUTOR_GRPC_USE_SSL":          "true",
		"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH": writeFile(t, dir, "cert.pem", "certificate"),
		"GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH": writeFile(t, dir, "key.pem", "key"),
	})
	require.NoError(t, err)
	assert.True(t, cfg.GRPCUseSSL)
	assert.Empty(t, cfg.GRPCCACertificatePath)
}

func TestLoadRejectsUnreadableCertificateFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files regardless of their permissions")
	}
	path := writeFile(t, t.TempDir(), "cert.pem", "certificate")
	require.NoError(t, os.Chmod(path, 0o000))

	_, err := load(t, map[string]string{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH": path})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot read: open "+path+": permission denied")
}

func TestTransportOverridesParsing(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  map[string]string
	}{
		{"", nil},
		{"a=memory", map[string]string{"a": "memory"}},
		{" a = memory , b=memory ", map[string]string{"a": "memory", "b": "memory"}},
	} {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES": tt.value})
			require.NoError(t, err)
			if tt.want == nil {
				assert.Empty(t, cfg.TransportOverrides)
				return
			}
			assert.Equal(t, tt.want, cfg.TransportOverrides)
		})
	}
}

func TestCheckHostedTypes(t *testing.T) {
	hosted := []string{"calculate-tax", "order-validator"}
	for _, tt := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{name: "nothing configured"},
		{name: "all hosted", vars: map[string]string{
			"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES": "calculate-tax=memory",
			"GAMELAN_EXECUTOR_ENABLED_TYPES":       "order-validator,calculate-tax",
		}},
		{
			name: "override not hosted",
			vars: map[string]string{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES": "calculate-tax=memory,ship=memory"},
			want: `GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES="calculate-tax=memory,ship=memory": type "ship" is not hosted; hosted types: calculate-tax, order-validator`,
		},
		{
			name: "enabled type not hosted",
			vars: map[string]string{"GAMELAN_EXECUTOR_ENABLED_TYPES": "calculate-tax,ship"},
			want: `GAMELAN_EXECUTOR_ENABLED_TYPES="calculate-tax,ship": type "ship" is not hosted; hosted types: calculate-tax, order-validator`,
		},
		{
			name: "override reported before enabled type",
			vars: map[string]string{
				"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES": "ship=memory",
				"GAMELAN_EXECUTOR_ENABLED_TYPES":       "fly",
			},
			want: `GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES="ship=memory": type "ship" is not hosted`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(t, tt.vars)
			require.NoError(t, err)
			err = cfg.CheckHostedTypes(hosted)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestSecretIsRedacted(t *testing.T) {
	secret := "do-not-print-" + strings.Repeat("x", 32)
	cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_JWT_SECRET": secret})
	require.NoError(t, err)
	require.Equal(t, secret, cfg.JWTSecret)

	printed := []string{
		cfg.String(),
		fmt.Sprint(cfg),
		fmt.Sprintf("%v %+v %#v %s %q", cfg, cfg, cfg, cfg, cfg),
		fmt.Sprintf("%v %+v %#v %s", &cfg, &cfg, &cfg, &cfg),
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", cfg)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", cfg)
	printed = append(printed, logged.String())

	for _, out := range printed {
		assert.NotContains(t, out, "do-not-print")
		assert.Contains(t, out, "[redacted]")
	}
	assert.Contains(t, cfg.String(), `GAMELAN_EXECUTOR_NAME="executor"`)
	assert.Contains(t, logged.String(), `"GAMELAN_EXECUTOR_THREAD_POOL_SIZE":50`)

	_, err = load(t, map[string]string{"GAMELAN_EXECUTOR_JWT_SECRET": "do-not-print"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "do-not-print")
}

func TestStringShowsUnsetSecretAsEmpty(t *testing.T) {
	cfg, err := load(t, nil)
	require.NoError(t, err)
	assert.Contains(t, cfg.String(), `GAMELAN_EXECUTOR_JWT_SECRET=""`)
	assert.NotContains(t, cfg.String(), "[redacted]")
}

func TestEveryFieldIsDocumented(t *testing.T) {
	configType := reflect.TypeFor[Config]()
	seen := make(map[string]bool)
	for i := range configType.NumField() {
		field := configType.Field(i)
		name, ok := field.Tag.Lookup("env")
		require.True(t, ok, "%s has an env tag", field.Name)
		assert.True(t, name == "PAYMENT_GATEWAY_DELAY" || strings.HasPrefix(name, prefix), "%s: %s is prefixed", field.Name, name)
		assert.NotContains(t, name, ",", "%s: no env tag options", field.Name)
		assert.False(t, seen[name], "%s declared twice", name)
		seen[name] = true
		_, ok = field.Tag.Lookup("envDefault")
		assert.True(t, ok, "%s has an envDefault tag", field.Name)
		doc := field.Tag.Get("doc")
		assert.NotEmpty(t, doc, "%s has a doc tag", field.Name)
		assert.True(t, strings.HasSuffix(doc, "."), "%s: doc is a sentence", field.Name)
		if field.Type.Kind() == reflect.Int {
			_, ok = field.Tag.Lookup("min")
			assert.True(t, ok, "%s has a min tag", field.Name)
		}
	}

	vars := Variables()
	require.Len(t, vars, configType.NumField())
	assert.Equal(t, Variable{
		Name:    "GAMELAN_EXECUTOR_NAME",
		Default: "executor",
		Doc:     "Service name, the prefix of executor ids: 1-64 characters of a-z, A-Z, 0-9, _ and -.",
	}, vars[0])
	assert.Equal(t, "PAYMENT_GATEWAY_DELAY", vars[len(vars)-1].Name)
}

func TestAdapterKindTablesHaveTheirDocs(t *testing.T) {
	for _, v := range Variables() {
		switch v.Name {
		case prefix + "TRANSPORT":
			for _, kind := range transportKinds {
				assert.Contains(t, v.Doc, kind)
			}
		case prefix + "REGISTRAR":
			for _, kind := range registrarKinds {
				assert.Contains(t, v.Doc, kind)
			}
		}
	}
	assert.Equal(t, []string{"grpc", "kafka", "memory", "rest"}, transportKinds)
	assert.Equal(t, []string{"grpc", "http", "kafka", "memory"}, registrarKinds)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestURLCredentialsAreRedacted(t *testing.T) {
	cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_ENGINE_URL": "https://svc:s3cr3t@engine:8080/api"})
	require.NoError(t, err)
	assert.Equal(t, "https://svc:s3cr3t@engine:8080/api", cfg.EngineURL, "the value itself is kept")
	assert.NotContains(t, cfg.String(), "s3cr3t")
	assert.Contains(t, cfg.String(), "https://svc:xxxxx@engine:8080/api")

	_, err = load(t, map[string]string{"GAMELAN_EXECUTOR_ENGINE_URL": "ftp://svc:s3cr3t@engine"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cr3t")
}

func TestKafkaPasswordIsRedacted(t *testing.T) {
	cfg, err := load(t, map[string]string{
		"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
		"GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME":  "svc",
		"GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD":  "hunter2-kafka",
	})
	require.NoError(t, err)
	assert.Equal(t, "hunter2-kafka", cfg.KafkaSASLPassword)
	assert.NotContains(t, cfg.String(), "hunter2-kafka")
	assert.NotContains(t, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg), "hunter2-kafka")
}
