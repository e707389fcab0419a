// Package config reads the executor service's configuration from the
// environment into a typed, validated Config.
//
// The environment is read exactly once, by Load, through the getenv function
// the caller passes (cmd/ passes os.Getenv; tests pass a map lookup). An empty
// variable counts as unset and takes its default, because getenv cannot tell
// the two apart. Every variable, its default and its meaning are declared in
// the struct tags of Config (env, envDefault, doc); Variables lists them in
// struct order so that the README table and the tests share that one source.
//
// A bad value is reported as one line naming the variable, the value and what
// is allowed, for example
//
//	GAMELAN_EXECUTOR_THREAD_POOL_SIZE="-3": must be a whole number of at least 1
//
// When several variables are wrong, the first in struct order is reported.
// JWT_SECRET is never shown, neither in errors nor in Config's String or
// LogValue.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// transportKinds are the accepted values of TRANSPORT and of the kinds in
// TRANSPORT_OVERRIDES. Each adapter adds its kind here when it lands.
var transportKinds = []string{"grpc", "kafka", "memory", "rest"}

// registrarKinds are the accepted values of REGISTRAR. Each control-plane
// adapter adds its kind here when it lands.
var registrarKinds = []string{"grpc", "http", "kafka", "memory"}

// Config is the complete, validated configuration of one executor process.
// Each field is set from the environment variable named by its env tag, or
// from its envDefault when the variable is empty or unset. Load fills in the
// defaults that depend on other variables (KafkaGroupID); the ones that depend
// on the host (InstanceID, GRPCAdvertisedEndpoint) stay empty and are resolved
// by the caller. Durations configured in seconds are available as
// time.Duration through methods of the same name without the Seconds suffix.
//
// Each field's meaning, accepted values and default are in its doc, env and
// envDefault tags, which Variables exposes; int fields also carry their
// inclusive bounds in min and max tags.
type Config struct {
	Name       string `env:"GAMELAN_EXECUTOR_NAME" envDefault:"executor" doc:"Service name, the prefix of executor ids: 1-64 characters of a-z, A-Z, 0-9, _ and -."`
	Version    string `env:"GAMELAN_EXECUTOR_VERSION" envDefault:"1.0.0" doc:"Version sent to the engine at registration."`
	InstanceID string `env:"GAMELAN_EXECUTOR_INSTANCE_ID" envDefault:"" doc:"Identity of this process among its replicas; empty derives it from the host name. Same characters as NAME."`

	EngineURL                string `env:"GAMELAN_EXECUTOR_ENGINE_URL" envDefault:"http://localhost:8080" doc:"Base URL of the engine's REST API (HTTP registrar): an absolute http or https URL."`
	EngineGRPCTarget         string `env:"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET" envDefault:"localhost:9000" doc:"Address of the engine's ExecutorService as host:port."`
	EngineHTTPTimeoutSeconds int    `env:"GAMELAN_EXECUTOR_ENGINE_HTTP_TIMEOUT_SECONDS" envDefault:"5" min:"1" max:"300" doc:"Timeout of each request to the engine's REST registry, in seconds."`

	Transport          string            `env:"GAMELAN_EXECUTOR_TRANSPORT" envDefault:"grpc" doc:"Default task transport for executor types that do not pin one: grpc, kafka, rest (an HTTP endpoint the engine posts tasks to), or memory (an in-process engine that serves every type, for development and tests)."`
	Registrar          string            `env:"GAMELAN_EXECUTOR_REGISTRAR" envDefault:"grpc" doc:"Control plane used to register, heartbeat and unregister: grpc (the engine's ExecutorService at ENGINE_GRPC_TARGET), http (the engine's REST registry at ENGINE_URL), kafka (the registration, heartbeat and unregistration topics) or memory."`
	TransportOverrides map[string]string `env:"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES" envDefault:"" doc:"Per-type transport as comma-separated type=kind pairs, e.g. calculate-tax=kafka,order-validator=grpc; wins over the type's declared communication type. Empty means none."`
	EnabledTypes       []string          `env:"GAMELAN_EXECUTOR_ENABLED_TYPES" envDefault:"" doc:"Comma-separated executor types this deployment serves; empty serves every hosted type."`

	GRPCIntake                  string `env:"GAMELAN_EXECUTOR_GRPC_INTAKE" envDefault:"push" doc:"gRPC intake beside the always-on push server: push (push only), stream or bidi."`
	GRPCHost                    string `env:"GAMELAN_EXECUTOR_GRPC_HOST" envDefault:"0.0.0.0" doc:"Address the push gRPC server binds to."`
	GRPCPort                    int    `env:"GAMELAN_EXECUTOR_GRPC_PORT" envDefault:"9090" min:"0" max:"65535" doc:"Port of the push gRPC server; 0 picks a free port."`
	GRPCAdvertisedEndpoint      string `env:"GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT" envDefault:"" doc:"Endpoint registered with the engine as host:port; empty means the bound gRPC address when GRPC_HOST is a specific IP, else the host name with the bound port."`
	GRPCKeepAliveTimeSeconds    int    `env:"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIME_SECONDS" envDefault:"300" min:"10" max:"31536000" doc:"Seconds without any traffic on the connection to the engine before a keepalive ping. 300 is as often as grpc-java, gRPC C-core and grpc-go servers accept by default; a lower value needs the engine to permit it, or it closes the connection (GOAWAY too_many_pings). At least 10, grpc-go's floor."`
	GRPCKeepAliveTimeoutSeconds int    `env:"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIMEOUT_SECONDS" envDefault:"20" min:"1" max:"31536000" doc:"Seconds to wait for a keepalive answer before the connection is closed."`
	GRPCKeepAliveWithoutCalls   bool   `env:"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_WITHOUT_CALLS" envDefault:"false" doc:"Also ping while no call is open on the connection; default gRPC servers refuse that, so set it only when the engine permits it (grpc-java permitKeepAliveWithoutCalls)."`
	GRPCMaxConcurrentStreams    int    `env:"GAMELAN_EXECUTOR_GRPC_MAX_CONCURRENT_STREAMS" envDefault:"1000" min:"1" doc:"Maximum concurrent streams per gRPC connection."`
	GRPCFlowControlWindow       int    `env:"GAMELAN_EXECUTOR_GRPC_FLOW_CONTROL_WINDOW" envDefault:"1048576" min:"65535" doc:"Initial gRPC flow-control window in bytes, per stream and per connection."`
	GRPCMaxMessageSize          int    `env:"GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE" envDefault:"4194304" min:"1024" doc:"Largest gRPC message in bytes, received or sent; a larger result is sent as FAILED OUTPUT_TOO_LARGE."`
	GRPCUseSSL                  bool   `env:"GAMELAN_EXECUTOR_GRPC_USE_SSL" envDefault:"false" doc:"Serve and dial gRPC with TLS; requires GRPC_CERTIFICATE_PATH and GRPC_PRIVATE_KEY_PATH."`
	GRPCCertificatePath         string `env:"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH" envDefault:"" doc:"PEM certificate file for TLS; must be readable when set."`
	GRPCPrivateKeyPath          string `env:"GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH" envDefault:"" doc:"PEM private key file for TLS; must be readable when set."`
	GRPCClientCertificatePath   string `env:"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH" envDefault:"" doc:"PEM certificate the executor presents to the engine (mutual TLS); empty means GRPC_CERTIFICATE_PATH, which must then be valid for client use too."`
	GRPCClientPrivateKeyPath    string `env:"GAMELAN_EXECUTOR_GRPC_CLIENT_PRIVATE_KEY_PATH" envDefault:"" doc:"PEM private key of GRPC_CLIENT_CERTIFICATE_PATH; set both or neither."`
	GRPCCACertificatePath       string `env:"GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH" envDefault:"" doc:"PEM CA bundle that peers' certificates must chain to (mutual TLS); must be readable when set."`

	RESTHost               string `env:"GAMELAN_EXECUTOR_REST_HOST" envDefault:"0.0.0.0" doc:"Address the REST task intake binds to (types served over rest)."`
	RESTPort               int    `env:"GAMELAN_EXECUTOR_REST_PORT" envDefault:"8081" min:"0" max:"65535" doc:"Port of the REST task intake; 0 picks a free port."`
	RESTAdvertisedEndpoint string `env:"GAMELAN_EXECUTOR_REST_ADVERTISED_ENDPOINT" envDefault:"" doc:"URL registered for REST types; empty means http://<bound address or host name>:<port>/api/v1/tasks."`
	RESTResultSink         string `env:"GAMELAN_EXECUTOR_REST_RESULT_SINK" envDefault:"grpc" doc:"Where results of tasks taken over REST go: grpc (ReportResults) or kafka (the results topic)."`
	RESTMaxBodyBytes       int    `env:"GAMELAN_EXECUTOR_REST_MAX_BODY_BYTES" envDefault:"1048576" min:"1024" doc:"Largest REST task body taken, in bytes; a larger one is refused with 400."`

	KafkaBootstrapServers      []string `env:"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS" envDefault:"localhost:9092" doc:"Comma-separated Kafka brokers as host:port."`
	KafkaGroupID               string   `env:"GAMELAN_EXECUTOR_KAFKA_GROUP_ID" envDefault:"" doc:"Kafka consumer group; empty means NAME."`
	KafkaTasksTopic            string   `env:"GAMELAN_EXECUTOR_KAFKA_TASKS_TOPIC" envDefault:"workflow.tasks" doc:"Topic tasks are consumed from."`
	KafkaResultsTopic          string   `env:"GAMELAN_EXECUTOR_KAFKA_RESULTS_TOPIC" envDefault:"workflow-results" doc:"Topic results are produced to."`
	KafkaRegistrationsTopic    string   `env:"GAMELAN_EXECUTOR_KAFKA_REGISTRATIONS_TOPIC" envDefault:"executor-registrations" doc:"Topic registrations are produced to."`
	KafkaHeartbeatsTopic       string   `env:"GAMELAN_EXECUTOR_KAFKA_HEARTBEATS_TOPIC" envDefault:"executor-heartbeats" doc:"Topic heartbeats are produced to."`
	KafkaUnregistrationsTopic  string   `env:"GAMELAN_EXECUTOR_KAFKA_UNREGISTRATIONS_TOPIC" envDefault:"executor-unregistrations" doc:"Topic unregistrations are produced to."`
	KafkaMaxMessageBytes       int      `env:"GAMELAN_EXECUTOR_KAFKA_MAX_MESSAGE_BYTES" envDefault:"1048576" min:"65536" doc:"Largest record taken or produced, in bytes; a larger task is answered FAILED INVALID_TASK, a larger result is sent as FAILED OUTPUT_TOO_LARGE."`
	KafkaSASLMechanism         string   `env:"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM" envDefault:"" doc:"SASL mechanism for the brokers: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no SASL."`
	KafkaSASLUsername          string   `env:"GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME" envDefault:"" doc:"SASL user; required with a mechanism."`
	KafkaSASLPassword          string   `env:"GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD" envDefault:"" doc:"SASL password. Never logged."`
	KafkaTLS                   bool     `env:"GAMELAN_EXECUTOR_KAFKA_TLS" envDefault:"false" doc:"Connect to the brokers over TLS."`
	KafkaCACertificatePath     string   `env:"GAMELAN_EXECUTOR_KAFKA_CA_CERTIFICATE_PATH" envDefault:"" doc:"PEM CA bundle the brokers' certificates must chain to; empty means the system roots. Must be readable when set."`
	KafkaClientCertificatePath string   `env:"GAMELAN_EXECUTOR_KAFKA_CLIENT_CERTIFICATE_PATH" envDefault:"" doc:"PEM client certificate for brokers that require mutual TLS; must be readable when set."`
	KafkaClientPrivateKeyPath  string   `env:"GAMELAN_EXECUTOR_KAFKA_CLIENT_PRIVATE_KEY_PATH" envDefault:"" doc:"PEM private key of KAFKA_CLIENT_CERTIFICATE_PATH; set both or neither."`

	JWTSecret        string `env:"GAMELAN_EXECUTOR_JWT_SECRET" envDefault:"" doc:"HS256 key of at least 32 bytes for tokens to and from the engine; empty means no tokens. Never logged."`
	JWTIssuer        string `env:"GAMELAN_EXECUTOR_JWT_ISSUER" envDefault:"gamelan-executor" doc:"Issuer of the tokens this service signs."`
	JWTAudience      string `env:"GAMELAN_EXECUTOR_JWT_AUDIENCE" envDefault:"gamelan-engine" doc:"Audience of the tokens this service signs."`
	JWTTTLSeconds    int    `env:"GAMELAN_EXECUTOR_JWT_TTL_SECONDS" envDefault:"300" min:"30" max:"86400" doc:"Lifetime of the tokens this service signs, in seconds."`
	JWTInboundIssuer string `env:"GAMELAN_EXECUTOR_JWT_INBOUND_ISSUER" envDefault:"gamelan-engine" doc:"Issuer that inbound tokens (the engine's, on push calls) must carry."`
	// JWTInboundAudience is the audience inbound tokens must name: a token
	// signed with the shared secret for another service is not for us.
	JWTInboundAudience string `env:"GAMELAN_EXECUTOR_JWT_INBOUND_AUDIENCE" envDefault:"gamelan-executor" doc:"Audience that inbound tokens (push calls, REST tasks) must name, the one the engine's tokens for executors carry; empty skips the check."`
	JWTInbound         string `env:"GAMELAN_EXECUTOR_JWT_INBOUND" envDefault:"required" doc:"Whether inbound tasks must carry a valid token when JWT_SECRET is set: required or off (accepts unauthenticated tasks, logged loudly)."`

	HeartbeatIntervalSeconds  int `env:"GAMELAN_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS" envDefault:"10" min:"1" max:"31536000" doc:"Seconds between heartbeats; must be below HEARTBEAT_TIMEOUT_SECONDS."`
	HeartbeatTimeoutSeconds   int `env:"GAMELAN_EXECUTOR_HEARTBEAT_TIMEOUT_SECONDS" envDefault:"60" min:"1" max:"31536000" doc:"Seconds after which the engine forgets an executor that stopped heartbeating (the engine's setting, not sent to it): the heartbeat interval must stay below it."`
	ReregisterIntervalSeconds int `env:"GAMELAN_EXECUTOR_REREGISTER_INTERVAL_SECONDS" envDefault:"60" min:"0" max:"31536000" doc:"Seconds between re-registrations even while heartbeats succeed, because an engine may answer heartbeats from executors it forgot; 0 disables periodic re-registration. A remade connection to the engine, or an answer saying it does not know an executor, re-registers at once anyway."`

	ThreadPoolSize            int `env:"GAMELAN_EXECUTOR_THREAD_POOL_SIZE" envDefault:"50" min:"1" doc:"Tasks run at once across all executor types."`
	QueueSize                 int `env:"GAMELAN_EXECUTOR_QUEUE_SIZE" envDefault:"1000" min:"0" doc:"Admitted tasks that may wait for a worker; beyond it intake stops."`
	TaskTimeoutSeconds        int `env:"GAMELAN_EXECUTOR_TASK_TIMEOUT_SECONDS" envDefault:"300" min:"1" max:"31536000" doc:"Deadline in seconds of tasks that carry no timeout."`
	ShutdownTimeoutSeconds    int `env:"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS" envDefault:"30" min:"1" max:"31536000" doc:"Seconds the drain waits for running tasks on shutdown before cancelling them."`
	ResultFlushTimeoutSeconds int `env:"GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS" envDefault:"10" min:"1" max:"31536000" doc:"Seconds results still undelivered after the drain may take to be acknowledged."`
	ResultOutboxSize          int `env:"GAMELAN_EXECUTOR_RESULT_OUTBOX_SIZE" envDefault:"1000" min:"1" doc:"Results that may wait for delivery per transport."`
	DedupeCapacity            int `env:"GAMELAN_EXECUTOR_DEDUPE_CAPACITY" envDefault:"10000" min:"1" doc:"Finished tasks remembered to drop duplicate deliveries."`

	HTTPHost string `env:"GAMELAN_EXECUTOR_HTTP_HOST" envDefault:"0.0.0.0" doc:"Address the HTTP server for probes and metrics binds to."`
	HTTPPort int    `env:"GAMELAN_EXECUTOR_HTTP_PORT" envDefault:"8090" min:"0" max:"65535" doc:"Port of the HTTP server for /q/health and /q/metrics (8090, beside an engine on 8080); 0 picks a free port."`

	LogLevel  string `env:"GAMELAN_EXECUTOR_LOG_LEVEL" envDefault:"info" doc:"Lowest level logged: debug, info, warn or error."`
	LogFormat string `env:"GAMELAN_EXECUTOR_LOG_FORMAT" envDefault:"json" doc:"Log line format: json or text."`

	PaymentGatewayDelay time.Duration `env:"PAYMENT_GATEWAY_DELAY" envDefault:"2s" doc:"Simulated gateway latency of the example payment-processor, as a Go duration of at least 0."`
}

// Variable describes one environment variable read by Load.
type Variable struct {
	// Name is the full variable name.
	Name string
	// Default is the value used when the variable is empty or unset; empty
	// means there is no default (see Doc for what that means).
	Default string
	// Doc says what the variable means and what values it accepts.
	Doc string
}

// Variables lists every variable Load reads, in struct order, from the tags
// of Config.
func Variables() []Variable {
	t := reflect.TypeFor[Config]()
	vars := make([]Variable, 0, t.NumField())
	for i := range t.NumField() {
		field := t.Field(i)
		name, ok := field.Tag.Lookup("env")
		if !ok {
			continue
		}
		vars = append(vars, Variable{Name: name, Default: field.Tag.Get("envDefault"), Doc: field.Tag.Get("doc")})
	}
	return vars
}

// Load reads every variable of Variables once through getenv, parses and
// validates them, and returns the complete Config or an error of one line
// naming the first wrong variable in struct order, its value and what is
// allowed.
func Load(getenv func(string) string) (Config, error) {
	if getenv == nil {
		return Config{}, errors.New("load config: getenv is nil")
	}
	environment := make(map[string]string)
	for _, v := range Variables() {
		environment[v.Name] = getenv(v.Name)
	}

	var cfg Config
	check := newValidator(environment)
	err := env.ParseWithOptions(&cfg, env.Options{
		Environment: environment,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeFor[[]string]():          parseList,
			reflect.TypeFor[map[string]string](): parseOverrides,
		},
	})
	if err != nil {
		if err := check.parseFailures(err); err != nil {
			return Config{}, err
		}
	}
	if cfg.KafkaGroupID == "" {
		cfg.KafkaGroupID = cfg.Name
	}
	check.config(cfg)
	if err := check.first(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// CheckHostedTypes reports, as one line naming the variable, the first type in
// TRANSPORT_OVERRIDES or ENABLED_TYPES that is not among hosted, the executor
// types this binary registers. Load cannot check this because only the caller
// knows the hosted types.
func (c Config) CheckHostedTypes(hosted []string) error {
	for _, typ := range slices.Sorted(maps.Keys(c.TransportOverrides)) {
		if !slices.Contains(hosted, typ) {
			return fmt.Errorf("GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES=%q: type %q is not hosted; hosted types: %s",
				formatOverrides(c.TransportOverrides), typ, strings.Join(hosted, ", "))
		}
	}
	for _, typ := range c.EnabledTypes {
		if !slices.Contains(hosted, typ) {
			return fmt.Errorf("GAMELAN_EXECUTOR_ENABLED_TYPES=%q: type %q is not hosted; hosted types: %s",
				strings.Join(c.EnabledTypes, ","), typ, strings.Join(hosted, ", "))
		}
	}
	return nil
}

// TypeEnabled reports whether this deployment serves the executor type typ:
// every type when ENABLED_TYPES is empty, else only the listed ones.
func (c Config) TypeEnabled(typ string) bool {
	return len(c.EnabledTypes) == 0 || slices.Contains(c.EnabledTypes, typ)
}

// GRPCKeepAliveTime is GRPCKeepAliveTimeSeconds as a duration.
func (c Config) GRPCKeepAliveTime() time.Duration { return seconds(c.GRPCKeepAliveTimeSeconds) }

// GRPCKeepAliveTimeout is GRPCKeepAliveTimeoutSeconds as a duration.
func (c Config) GRPCKeepAliveTimeout() time.Duration {
	return seconds(c.GRPCKeepAliveTimeoutSeconds)
}

// JWTTTL is JWTTTLSeconds as a duration.
func (c Config) JWTTTL() time.Duration { return seconds(c.JWTTTLSeconds) }

// HeartbeatInterval is HeartbeatIntervalSeconds as a duration.
func (c Config) HeartbeatInterval() time.Duration { return seconds(c.HeartbeatIntervalSeconds) }

// HeartbeatTimeout is HeartbeatTimeoutSeconds as a duration.
func (c Config) HeartbeatTimeout() time.Duration { return seconds(c.HeartbeatTimeoutSeconds) }

// ReregisterInterval is ReregisterIntervalSeconds as a duration; zero means
// periodic re-registration is disabled.
func (c Config) ReregisterInterval() time.Duration { return seconds(c.ReregisterIntervalSeconds) }

// TaskTimeout is TaskTimeoutSeconds as a duration.
func (c Config) TaskTimeout() time.Duration { return seconds(c.TaskTimeoutSeconds) }

// ShutdownTimeout is ShutdownTimeoutSeconds as a duration.
func (c Config) ShutdownTimeout() time.Duration { return seconds(c.ShutdownTimeoutSeconds) }

// EngineHTTPTimeout is EngineHTTPTimeoutSeconds as a duration.
func (c Config) EngineHTTPTimeout() time.Duration { return seconds(c.EngineHTTPTimeoutSeconds) }

// ResultFlushTimeout is ResultFlushTimeoutSeconds as a duration.
func (c Config) ResultFlushTimeout() time.Duration { return seconds(c.ResultFlushTimeoutSeconds) }

// SlogLevel is LogLevel as a slog.Level. Load accepts only levels that map
// exactly, so any other value (a Config not made by Load) gives slog.LevelInfo.
func (c Config) SlogLevel() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return level
}

// String renders every variable as NAME="value" on one line, in struct
// order, with JWT_SECRET redacted. fmt's %v, %+v and %s use it.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("config{")
	for i, f := range c.fields() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(f.text))
	}
	b.WriteByte('}')
	return b.String()
}

// GoString makes %#v print String too, so that no fmt verb shows the secret.
func (c Config) GoString() string { return c.String() }

// LogValue renders every variable as an attribute keyed by its name, with
// JWT_SECRET redacted, so that logging a Config never logs the secret.
func (c Config) LogValue() slog.Value {
	fields := c.fields()
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		attrs = append(attrs, slog.Attr{Key: f.name, Value: f.value})
	}
	return slog.GroupValue(attrs...)
}

// renderedField is one variable of a Config ready for output.
type renderedField struct {
	name  string
	text  string
	value slog.Value
}

// redactURL hides the password of a URL with credentials in it (an
// ENGINE_URL like https://user:pass@engine); other values pass unchanged.
func redactURL(value string) string {
	if u, err := url.Parse(value); err == nil && u.User != nil {
		return u.Redacted()
	}
	return value
}

// fields renders every variable of c in struct order, redacting the secret.
func (c Config) fields() []renderedField {
	v := reflect.ValueOf(c)
	t := v.Type()
	out := make([]renderedField, 0, t.NumField())
	for i := range t.NumField() {
		name, ok := t.Field(i).Tag.Lookup("env")
		if !ok {
			continue
		}
		f := renderedField{name: name}
		switch value := v.Field(i).Interface().(type) {
		case int:
			f.text, f.value = strconv.Itoa(value), slog.IntValue(value)
		case bool:
			f.text, f.value = strconv.FormatBool(value), slog.BoolValue(value)
		case []string:
			f.text = strings.Join(value, ",")
			f.value = slog.StringValue(f.text)
		case map[string]string:
			f.text = formatOverrides(value)
			f.value = slog.StringValue(f.text)
		case time.Duration:
			f.text, f.value = value.String(), slog.DurationValue(value)
		case string:
			f.text = redactURL(value)
			if isSecret(name) && value != "" {
				f.text = redacted
			}
			f.value = slog.StringValue(f.text)
		default:
			f.text = fmt.Sprint(value)
			f.value = slog.StringValue(f.text)
		}
		out = append(out, f)
	}
	return out
}

// redacted replaces the secret wherever a Config is shown.
const redacted = "[redacted]"

// seconds converts a validated number of seconds to a duration.
func seconds(n int) time.Duration { return time.Duration(n) * time.Second }

// formatOverrides renders overrides as sorted type=kind pairs, the form
// TRANSPORT_OVERRIDES is written in.
func formatOverrides(overrides map[string]string) string {
	pairs := make([]string, 0, len(overrides))
	for _, typ := range slices.Sorted(maps.Keys(overrides)) {
		pairs = append(pairs, typ+"="+overrides[typ])
	}
	return strings.Join(pairs, ",")
}
