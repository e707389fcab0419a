package config

import (
	"bytes"
	"encoding"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
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

// all is Config with the sections of the transports this repository ships,
// as the service loads them.
type all struct {
	Config
	GRPC  GRPC
	REST  REST
	Kafka Kafka
}

func (a *all) sections() []any { return []any{&a.GRPC, &a.REST, &a.Kafka} }

func load(t *testing.T, vars map[string]string) (all, error) {
	t.Helper()
	getenv, _ := environment(vars)
	var a all
	cfg, err := Load(getenv, a.sections()...)
	a.Config = cfg
	return a, err
}

func TestLoadDefaultsWithEmptyEnvironment(t *testing.T) {
	getenv, asked := environment(nil)
	var a all
	cfg, err := Load(getenv, a.sections()...)
	require.NoError(t, err)
	a.Config = cfg

	vars := Variables(a.sections()...)
	for _, v := range vars {
		assert.Equal(t, 1, asked[v.Name], "getenv calls for %s", v.Name)
	}
	assert.Len(t, asked, len(vars), "getenv asked only for declared variables")

	// Every default is its envDefault tag: setting each variable to its
	// documented default changes nothing.
	documented := make(map[string]string)
	for _, v := range vars {
		documented[v.Name] = v.Default
	}
	explicit, err := load(t, documented)
	require.NoError(t, err)
	assert.Equal(t, explicit, a)

	// A few defaults read through their types.
	assert.Equal(t, Identifier("executor"), a.Name)
	assert.Equal(t, 50, int(a.ThreadPoolSize))
	assert.Equal(t, 5*time.Minute, a.TaskTimeout.Duration())
	assert.Equal(t, time.Minute, a.ReregisterInterval.Duration())
	assert.Equal(t, 300*time.Second, a.GRPC.KeepAliveTime.Duration())
	assert.Equal(t, 5*time.Second, a.REST.EngineTimeout.Duration())
	assert.Equal(t, HostPorts{"localhost:9092"}, a.Kafka.BootstrapServers)
	assert.Equal(t, Topic("workflow.tasks"), a.Kafka.TasksTopic)
	assert.Empty(t, a.Kafka.GroupID, "the service defaults it to NAME")
	assert.Equal(t, KafkaOrdering("unordered"), a.Kafka.Ordering, "ordering is off by default")
	assert.Equal(t, 2*time.Second, a.PaymentGatewayDelay.Duration())
	assert.Empty(t, a.TransportOverrides)
	assert.Empty(t, a.EnabledTypes)
	assert.True(t, a.TypeEnabled("anything"))
	assert.Equal(t, slog.LevelInfo, a.LogLevel.Slog())
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
		"GAMELAN_EXECUTOR_KAFKA_DEAD_LETTER_TOPIC":         "t.dlt",
		"GAMELAN_EXECUTOR_KAFKA_IDEMPOTENT":                "on",
		"GAMELAN_EXECUTOR_KAFKA_ORDERING":                  "key",
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
		"GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY":            "calculate-tax",
		"GAMELAN_EXECUTOR_HTTP_HOST":                       "localhost",
		"GAMELAN_EXECUTOR_HTTP_PORT":                       "65535",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                       "debug",
		"GAMELAN_EXECUTOR_LOG_FORMAT":                      "text",
		"PAYMENT_GATEWAY_DELAY":                            "0s",
	})
	require.NoError(t, err)

	assert.Equal(t, Config{
		Name:                "tax-service",
		Version:             "2.3.4",
		InstanceID:          "pod-7",
		Transport:           "memory",
		Registrar:           "memory",
		TransportOverrides:  Overrides{"calculate-tax": "memory", "order-validator": "grpc"},
		EnabledTypes:        Names{"calculate-tax", "order-validator"},
		JWTSecret:           SigningKey(secret),
		JWTIssuer:           "issuer",
		JWTAudience:         "audience",
		JWTTTL:              Seconds[TokenLifetime](86400 * time.Second),
		JWTInboundIssuer:    "engine-issuer",
		JWTInboundAudience:  "tax-service",
		JWTInbound:          "off",
		HeartbeatInterval:   Seconds[UpToAYear](5 * time.Second),
		HeartbeatTimeout:    Seconds[UpToAYear](6 * time.Second),
		ReregisterInterval:  0,
		ThreadPoolSize:      1,
		QueueSize:           0,
		TaskTimeout:         Seconds[UpToAYear](time.Second),
		ShutdownTimeout:     Seconds[UpToAYear](2 * time.Second),
		ResultFlushTimeout:  Seconds[UpToAYear](3 * time.Second),
		ResultOutboxSize:    4,
		DedupeCapacity:      5,
		AdaptiveConcurrency: Names{"calculate-tax"},
		HTTPHost:            "localhost",
		HTTPPort:            65535,
		LogLevel:            "debug",
		LogFormat:           "text",
		PaymentGatewayDelay: 0,
	}, cfg.Config)
	assert.Equal(t, GRPC{
		EngineTarget:         "engine.example:9443",
		Intake:               "bidi",
		Host:                 "127.0.0.1",
		Port:                 0,
		AdvertisedEndpoint:   "tax-service:9090",
		KeepAliveTime:        Seconds[KeepAliveRange](10 * time.Second),
		KeepAliveTimeout:     Seconds[UpToAYear](time.Second),
		MaxConcurrentStreams: 1,
		FlowControlWindow:    65535,
		MaxMessageSize:       1024,
		UseSSL:               true,
		CertificatePath:      File(cert),
		PrivateKeyPath:       File(key),
		CACertificatePath:    File(ca),
	}, cfg.GRPC)
	assert.Equal(t, REST{
		EngineURL:     "https://engine.example:8443/api",
		EngineTimeout: Seconds[RequestTimeout](5 * time.Second),
		Host:          "0.0.0.0",
		Port:          8081,
		ResultSink:    "grpc",
		MaxBodyBytes:  1048576,
	}, cfg.REST)
	assert.Equal(t, Kafka{
		BootstrapServers:     HostPorts{"k1:9092", "k2:9093"},
		GroupID:              "tax-group",
		TasksTopic:           "t.tasks",
		ResultsTopic:         "t.results",
		RegistrationsTopic:   "t.registrations",
		HeartbeatsTopic:      "t.heartbeats",
		UnregistrationsTopic: "t.unregistrations",
		MaxMessageBytes:      1048576,
		DeadLetterTopic:      "t.dlt",
		Idempotent:           "on",
		Ordering:             "key",
	}, cfg.Kafka)
	assert.Zero(t, cfg.ReregisterInterval.Duration(), "0 disables periodic re-registration")
	assert.Equal(t, slog.LevelDebug, cfg.LogLevel.Slog())
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
		{"GAMELAN_EXECUTOR_TRANSPORT", "Carrier Pigeon", nil, `GAMELAN_EXECUTOR_TRANSPORT="Carrier Pigeon": must be a transport kind: lower-case letters, digits and -`},
		{"GAMELAN_EXECUTOR_REGISTRAR", "", map[string]string{"GAMELAN_EXECUTOR_REGISTRAR": "a b"}, `GAMELAN_EXECUTOR_REGISTRAR="a b": must be a transport kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=memory,b", nil, `GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES="a=memory,b": pair "b" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "=memory", nil, `pair "=memory" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=", nil, `pair "a=" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=memory,,b=memory", nil, `pair "" must be type=kind`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=memory,a=memory", nil, `type "a" must appear only once`},
		{"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES", "a=Memory", nil, `pair "a=Memory" must be type=kind`},
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
		{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH", missing, nil, fmt.Sprintf("GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH=%q: cannot read: no such file or directory", missing)},
		{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH", dir, nil, "cannot read: not a regular file"},
		{"GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH", empty, nil, "cannot read: the file is empty"},
		{"GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH", missing, nil, "cannot read: no such file or directory"},
		{"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH", missing, nil, "cannot read: no such file or directory"},
		{"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH", cert, nil, "must be set together with GRPC_CLIENT_PRIVATE_KEY_PATH"},
		{"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM", "GSSAPI", nil, "must be one of"},
		{"GAMELAN_EXECUTOR_KAFKA_ORDERING", "offset", nil, `GAMELAN_EXECUTOR_KAFKA_ORDERING="offset": must be one of unordered, key, partition`},
		{"GAMELAN_EXECUTOR_KAFKA_ORDERING", "Key", nil, "must be one of unordered, key, partition"},
		{"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM", "PLAIN", nil, "GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME=\"\": must be set when"},
		{"GAMELAN_EXECUTOR_KAFKA_CLIENT_CERTIFICATE_PATH", cert, nil, "must be set together with KAFKA_CLIENT_PRIVATE_KEY_PATH"},
		{"GAMELAN_EXECUTOR_KAFKA_DEAD_LETTER_TOPIC", "no spaces", nil, "must be off or a Kafka topic name"},
		{"GAMELAN_EXECUTOR_KAFKA_IDEMPOTENT", "maybe", nil, "must be one of auto, on, off"},
		{"GAMELAN_EXECUTOR_KAFKA_CA_CERTIFICATE_PATH", missing, nil, "cannot read: no such file or directory"},
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
			assert.Zero(t, cfg, "no partial Config or section on error")
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
		"GAMELAN_EXECUTOR_KAFKA_TLS":        "maybe",
		"GAMELAN_EXECUTOR_VERSION":          " ",
	})
	require.Error(t, err)
	assert.Equal(t, `GAMELAN_EXECUTOR_VERSION=" ": must not be blank`, err.Error())

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

func TestLoadLeavesKafkaGroupToTheService(t *testing.T) {
	cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_NAME": "payments"})
	require.NoError(t, err)
	assert.Empty(t, cfg.Kafka.GroupID, "empty: the service defaults it to NAME")
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
	assert.True(t, cfg.GRPC.UseSSL)
	assert.Empty(t, cfg.GRPC.CACertificatePath)
}

func TestLoadRejectsUnreadableCertificateFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files regardless of their permissions")
	}
	path := writeFile(t, t.TempDir(), "cert.pem", "certificate")
	require.NoError(t, os.Chmod(path, 0o000))

	_, err := load(t, map[string]string{"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH": path})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH="+strconv.Quote(path)+": cannot read: permission denied")
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
			assert.Equal(t, tt.want, map[string]string(toStrings(cfg.TransportOverrides)))
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
		{name: "adaptive types hosted", vars: map[string]string{"GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY": "order-validator, calculate-tax"}},
		{name: "adaptive for all", vars: map[string]string{"GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY": "all"}},
		{
			name: "adaptive type not hosted",
			vars: map[string]string{"GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY": "calculate-tax,ship"},
			want: `GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY="calculate-tax,ship": type "ship" is not hosted; hosted types: calculate-tax, order-validator`,
		},
		{
			name: "adaptive all beside a type",
			vars: map[string]string{"GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY": "all,calculate-tax"},
			want: `GAMELAN_EXECUTOR_ADAPTIVE_CONCURRENCY="all,calculate-tax": "all" names every type and must stand alone`,
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
	require.Equal(t, SigningKey(secret), cfg.JWTSecret)

	printed := []string{
		cfg.String(),
		fmt.Sprint(cfg.JWTSecret),
		fmt.Sprint(cfg),
		fmt.Sprintf("%v %+v %#v %s %q", cfg, cfg, cfg, cfg, cfg),
		fmt.Sprintf("%v %+v %#v %s", &cfg, &cfg, &cfg, &cfg),
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", cfg.Config)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", cfg.Config)
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
	var a all
	seen := make(map[string]bool)
	for _, section := range append([]any{&a.Config}, a.sections()...) {
		sectionType := reflect.TypeOf(section).Elem()
		for i := range sectionType.NumField() {
			field := sectionType.Field(i)
			name, ok := field.Tag.Lookup("env")
			require.True(t, ok, "%s has an env tag", field.Name)
			assert.True(t, name == "PAYMENT_GATEWAY_DELAY" || strings.HasPrefix(name, "GAMELAN_EXECUTOR_"), "%s: %s is prefixed", field.Name, name)
			assert.NotContains(t, name, ",", "%s: no env tag options", field.Name)
			assert.False(t, seen[name], "%s declared twice", name)
			seen[name] = true
			_, ok = field.Tag.Lookup("envDefault")
			assert.True(t, ok, "%s has an envDefault tag", field.Name)
			doc := field.Tag.Get("doc")
			assert.NotEmpty(t, doc, "%s has a doc tag", field.Name)
			assert.True(t, strings.HasSuffix(doc, "."), "%s: doc is a sentence", field.Name)
			assert.True(t, field.Type.Kind() == reflect.String || field.Type.Kind() == reflect.Bool ||
				reflect.PointerTo(field.Type).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()),
				"%s parses itself (or is a plain string or bool)", field.Name)
		}
	}

	vars := Variables(a.sections()...)
	assert.Len(t, vars, len(seen))
	assert.Equal(t, Variable{
		Name:    "GAMELAN_EXECUTOR_NAME",
		Default: "executor",
		Doc:     "Service name, the prefix of executor ids: 1-64 characters of a-z, A-Z, 0-9, _ and -.",
	}, vars[0])
	assert.Equal(t, "GAMELAN_EXECUTOR_KAFKA_IDEMPOTENT", vars[len(vars)-1].Name, "sections follow Config, in order")
}

// spool is a section as a fork's transport declares it, outside this package.
type spool struct {
	Dir      Text               `env:"GAMELAN_EXECUTOR_SPOOL_DIR" envDefault:"/var/spool/executor" doc:"Directory tasks are read from."`
	Interval Seconds[UpToAYear] `env:"GAMELAN_EXECUTOR_SPOOL_SCAN_SECONDS" envDefault:"2" doc:"Seconds between scans."`
	Archive  bool               `env:"GAMELAN_EXECUTOR_SPOOL_ARCHIVE" envDefault:"false" doc:"Keep answered tasks."`
}

func (s *spool) Check() []Problem {
	if s.Archive && s.Interval.Duration() > time.Minute {
		return []Problem{{"GAMELAN_EXECUTOR_SPOOL_ARCHIVE", "needs SPOOL_SCAN_SECONDS of at most 60"}}
	}
	return nil
}

func TestASectionDeclaredElsewhereLoadsLikeTheOthers(t *testing.T) {
	var s spool
	getenv, _ := environment(map[string]string{"GAMELAN_EXECUTOR_SPOOL_SCAN_SECONDS": "5"})
	_, err := Load(getenv, &s)
	require.NoError(t, err)
	assert.Equal(t, spool{Dir: "/var/spool/executor", Interval: Seconds[UpToAYear](5 * time.Second)}, s)
	assert.Equal(t, "GAMELAN_EXECUTOR_SPOOL_ARCHIVE", Variables(&s)[len(Variables(&s))-1].Name)

	getenv, _ = environment(map[string]string{"GAMELAN_EXECUTOR_SPOOL_SCAN_SECONDS": "0"})
	_, err = Load(getenv, &s)
	require.Error(t, err)
	assert.Equal(t, `GAMELAN_EXECUTOR_SPOOL_SCAN_SECONDS="0": must be a whole number of at least 1 and at most 31536000`, err.Error())
	assert.Zero(t, s, "no partial section on error")

	getenv, _ = environment(map[string]string{"GAMELAN_EXECUTOR_SPOOL_ARCHIVE": "true", "GAMELAN_EXECUTOR_SPOOL_SCAN_SECONDS": "61"})
	_, err = Load(getenv, &s)
	require.Error(t, err)
	assert.Equal(t, `GAMELAN_EXECUTOR_SPOOL_ARCHIVE="true": needs SPOOL_SCAN_SECONDS of at most 60`, err.Error())

	getenv, _ = environment(nil)
	_, err = Load(getenv, &s, &spool{})
	require.Error(t, err, "a variable declared twice is a defect")
	assert.Contains(t, err.Error(), "GAMELAN_EXECUTOR_SPOOL_DIR is declared twice")
}

func toStrings(o Overrides) map[string]string {
	out := make(map[string]string, len(o))
	for typ, kind := range o {
		out[typ] = string(kind)
	}
	return out
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
	assert.Equal(t, URL("https://svc:s3cr3t@engine:8080/api"), cfg.REST.EngineURL, "the value itself is kept")
	assert.NotContains(t, Show(cfg.REST), "s3cr3t")
	assert.Contains(t, Show(cfg.REST), "https://svc:xxxxx@engine:8080/api")

	_, err = load(t, map[string]string{"GAMELAN_EXECUTOR_ENGINE_URL": "ftp://svc:s3cr3t@engine"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cr3t")
}

func TestKafkaOrdering(t *testing.T) {
	for _, mode := range []string{"unordered", "key", "partition"} {
		cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_KAFKA_ORDERING": mode})
		require.NoError(t, err, mode)
		assert.Equal(t, KafkaOrdering(mode), cfg.Kafka.Ordering)
	}
}

func TestKafkaPasswordIsRedacted(t *testing.T) {
	cfg, err := load(t, map[string]string{
		"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
		"GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME":  "svc",
		"GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD":  "hunter2-kafka",
	})
	require.NoError(t, err)
	assert.Equal(t, Secret("hunter2-kafka"), cfg.Kafka.SASLPassword)
	assert.NotContains(t, Show(cfg.Kafka), "hunter2-kafka")
	assert.Contains(t, Show(cfg.Kafka), `GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD="[redacted]"`)
	assert.NotContains(t, fmt.Sprintf("%v %+v %s", cfg.Kafka.SASLPassword, cfg.Kafka, cfg.Kafka.SASLPassword), "hunter2-kafka")
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("kafka", "kafka", LogValue(cfg.Kafka))
	assert.NotContains(t, logged.String(), "hunter2-kafka")
}

func TestShutdownBudgetFitsOnlyWhenTheGracePeriodCoversPreStopDrainAndFlush(t *testing.T) {
	for _, c := range []struct {
		name string
		vars map[string]string
		need time.Duration
		fits bool
	}{
		{"grace period unknown", map[string]string{}, 40 * time.Second, true},
		{"exactly enough", map[string]string{"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS": "45", "GAMELAN_EXECUTOR_PRE_STOP_SECONDS": "5"}, 45 * time.Second, true},
		{"the preStop eats the margin", map[string]string{"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS": "44", "GAMELAN_EXECUTOR_PRE_STOP_SECONDS": "5"}, 45 * time.Second, false},
		{"Kubernetes' default with a long drain", map[string]string{"GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS": "30", "GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "60"}, 70 * time.Second, false},
	} {
		getenv, _ := environment(c.vars)
		cfg, err := Load(getenv)
		require.NoError(t, err, c.name)
		need, grace, fits := cfg.ShutdownBudget()
		assert.Equal(t, c.need, need, c.name)
		assert.Equal(t, c.fits, fits, c.name)
		assert.Equal(t, cfg.TerminationGracePeriod.Duration(), grace, c.name)
	}
}

func TestAdaptiveFor(t *testing.T) {
	none := Config{}
	assert.False(t, none.AdaptiveFor("calculate-tax"), "off by default")
	some := Config{AdaptiveConcurrency: Names{"calculate-tax"}}
	assert.True(t, some.AdaptiveFor("calculate-tax"))
	assert.False(t, some.AdaptiveFor("order-validator"))
	all := Config{AdaptiveConcurrency: Names{"all"}}
	assert.True(t, all.AdaptiveFor("order-validator"))
}
