package config

import (
	"errors"
	"strings"
)

// The sections of the transports this repository ships. The service's
// transport table names the section of each transport; Load fills them.

// GRPC is the gRPC transport's section: the connection to the engine's
// ExecutorService and the push server the engine calls.
type GRPC struct {
	EngineTarget          HostPort                `env:"GAMELAN_EXECUTOR_ENGINE_GRPC_TARGET" envDefault:"localhost:9000" doc:"Address of the engine's ExecutorService as host:port."`
	Intake                GRPCIntake              `env:"GAMELAN_EXECUTOR_GRPC_INTAKE" envDefault:"push" doc:"gRPC intake beside the always-on push server: push (push only), stream or bidi."`
	Host                  Text                    `env:"GAMELAN_EXECUTOR_GRPC_HOST" envDefault:"0.0.0.0" doc:"Address the push gRPC server binds to."`
	Port                  Int[PortRange]          `env:"GAMELAN_EXECUTOR_GRPC_PORT" envDefault:"9090" doc:"Port of the push gRPC server; 0 picks a free port."`
	AdvertisedEndpoint    HostPort                `env:"GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT" envDefault:"" doc:"Endpoint registered with the engine as host:port; empty means the bound gRPC address when GRPC_HOST is a specific IP, else the host name with the bound port."`
	KeepAliveTime         Seconds[KeepAliveRange] `env:"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIME_SECONDS" envDefault:"300" doc:"Seconds without any traffic on the connection to the engine before a keepalive ping. 300 is as often as grpc-java, gRPC C-core and grpc-go servers accept by default; a lower value needs the engine to permit it, or it closes the connection (GOAWAY too_many_pings). At least 10, grpc-go's floor."`
	KeepAliveTimeout      Seconds[UpToAYear]      `env:"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_TIMEOUT_SECONDS" envDefault:"20" doc:"Seconds to wait for a keepalive answer before the connection is closed."`
	KeepAliveWithoutCalls bool                    `env:"GAMELAN_EXECUTOR_GRPC_KEEP_ALIVE_WITHOUT_CALLS" envDefault:"false" doc:"Also ping while no call is open on the connection; default gRPC servers refuse that, so set it only when the engine permits it (grpc-java permitKeepAliveWithoutCalls)."`
	MaxConcurrentStreams  Int[AtLeast1]           `env:"GAMELAN_EXECUTOR_GRPC_MAX_CONCURRENT_STREAMS" envDefault:"1000" doc:"Maximum concurrent streams per gRPC connection."`
	FlowControlWindow     Int[HTTP2Window]        `env:"GAMELAN_EXECUTOR_GRPC_FLOW_CONTROL_WINDOW" envDefault:"1048576" doc:"Initial gRPC flow-control window in bytes, per stream and per connection; at least 65535."`
	MaxMessageSize        Int[AtLeast1KiB]        `env:"GAMELAN_EXECUTOR_GRPC_MAX_MESSAGE_SIZE" envDefault:"4194304" doc:"Largest gRPC message in bytes, received or sent; a larger result is sent as FAILED OUTPUT_TOO_LARGE."`
	UseSSL                bool                    `env:"GAMELAN_EXECUTOR_GRPC_USE_SSL" envDefault:"false" doc:"Serve and dial gRPC with TLS; requires GRPC_CERTIFICATE_PATH and GRPC_PRIVATE_KEY_PATH."`
	CertificatePath       File                    `env:"GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH" envDefault:"" doc:"PEM certificate file for TLS; must be readable when set."`
	PrivateKeyPath        File                    `env:"GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH" envDefault:"" doc:"PEM private key file for TLS; must be readable when set."`
	ClientCertificatePath File                    `env:"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH" envDefault:"" doc:"PEM certificate the executor presents to the engine (mutual TLS); empty means GRPC_CERTIFICATE_PATH, which must then be valid for client use too."`
	ClientPrivateKeyPath  File                    `env:"GAMELAN_EXECUTOR_GRPC_CLIENT_PRIVATE_KEY_PATH" envDefault:"" doc:"PEM private key of GRPC_CLIENT_CERTIFICATE_PATH; set both or neither."`
	CACertificatePath     File                    `env:"GAMELAN_EXECUTOR_GRPC_CA_CERTIFICATE_PATH" envDefault:"" doc:"PEM CA bundle that peers' certificates must chain to (mutual TLS); must be readable when set."`
}

// Check applies the TLS rules, which span several variables.
func (g *GRPC) Check() []Problem {
	var problems []Problem
	if g.UseSSL && (g.CertificatePath == "" || g.PrivateKeyPath == "") {
		problems = append(problems, Problem{"GAMELAN_EXECUTOR_GRPC_USE_SSL",
			"requires GAMELAN_EXECUTOR_GRPC_CERTIFICATE_PATH and GAMELAN_EXECUTOR_GRPC_PRIVATE_KEY_PATH to be set"})
	}
	if (g.ClientCertificatePath == "") != (g.ClientPrivateKeyPath == "") {
		problems = append(problems, Problem{"GAMELAN_EXECUTOR_GRPC_CLIENT_CERTIFICATE_PATH",
			"must be set together with GRPC_CLIENT_PRIVATE_KEY_PATH, or both left empty"})
	}
	return problems
}

// GRPCIntake is how tasks arrive over gRPC beside push.
type GRPCIntake string

// UnmarshalText accepts push, stream and bidi.
func (i *GRPCIntake) UnmarshalText(text []byte) error {
	return oneOf(i, text, "push", "stream", "bidi")
}

// REST is the REST section: the engine's REST registry (the rest registrar)
// and the REST task intake the engine posts to.
type REST struct {
	EngineURL          URL                     `env:"GAMELAN_EXECUTOR_ENGINE_URL" envDefault:"http://localhost:8080" doc:"Base URL of the engine's REST API (the rest registrar): an absolute http or https URL."`
	EngineTimeout      Seconds[RequestTimeout] `env:"GAMELAN_EXECUTOR_ENGINE_HTTP_TIMEOUT_SECONDS" envDefault:"5" doc:"Timeout of each request to the engine's REST registry, in seconds, from 1 to 300."`
	Host               Text                    `env:"GAMELAN_EXECUTOR_REST_HOST" envDefault:"0.0.0.0" doc:"Address the REST task intake binds to (types served over rest)."`
	Port               Int[PortRange]          `env:"GAMELAN_EXECUTOR_REST_PORT" envDefault:"8081" doc:"Port of the REST task intake; 0 picks a free port."`
	AdvertisedEndpoint URL                     `env:"GAMELAN_EXECUTOR_REST_ADVERTISED_ENDPOINT" envDefault:"" doc:"URL registered for REST types; empty means http://<bound address or host name>:<port>/api/v1/tasks."`
	ResultSink         ResultSink              `env:"GAMELAN_EXECUTOR_REST_RESULT_SINK" envDefault:"grpc" doc:"Where results of tasks taken over REST go: grpc (ReportResults) or kafka (the results topic)."`
	MaxBodyBytes       Int[AtLeast1KiB]        `env:"GAMELAN_EXECUTOR_REST_MAX_BODY_BYTES" envDefault:"1048576" doc:"Largest REST task body taken, in bytes; a larger one is refused with 400."`
}

// ResultSink is where results of tasks taken over REST go.
type ResultSink string

// UnmarshalText accepts grpc and kafka.
func (s *ResultSink) UnmarshalText(text []byte) error { return oneOf(s, text, "grpc", "kafka") }

// Kafka is the Kafka transport's section: the brokers, the topics, and the
// credentials.
type Kafka struct {
	BootstrapServers      HostPorts         `env:"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS" envDefault:"localhost:9092" doc:"Comma-separated Kafka brokers as host:port."`
	GroupID               string            `env:"GAMELAN_EXECUTOR_KAFKA_GROUP_ID" envDefault:"" doc:"Kafka consumer group; empty means NAME."`
	TasksTopic            Topic             `env:"GAMELAN_EXECUTOR_KAFKA_TASKS_TOPIC" envDefault:"workflow.tasks" doc:"Topic tasks are consumed from."`
	ResultsTopic          Topic             `env:"GAMELAN_EXECUTOR_KAFKA_RESULTS_TOPIC" envDefault:"workflow-results" doc:"Topic results are produced to."`
	RegistrationsTopic    Topic             `env:"GAMELAN_EXECUTOR_KAFKA_REGISTRATIONS_TOPIC" envDefault:"executor-registrations" doc:"Topic registrations are produced to."`
	HeartbeatsTopic       Topic             `env:"GAMELAN_EXECUTOR_KAFKA_HEARTBEATS_TOPIC" envDefault:"executor-heartbeats" doc:"Topic heartbeats are produced to."`
	UnregistrationsTopic  Topic             `env:"GAMELAN_EXECUTOR_KAFKA_UNREGISTRATIONS_TOPIC" envDefault:"executor-unregistrations" doc:"Topic unregistrations are produced to."`
	MaxMessageBytes       Int[AtLeast64KiB] `env:"GAMELAN_EXECUTOR_KAFKA_MAX_MESSAGE_BYTES" envDefault:"1048576" doc:"Largest record taken or produced, in bytes; a larger task is answered FAILED INVALID_TASK, a larger result is sent as FAILED OUTPUT_TOO_LARGE."`
	Ordering              KafkaOrdering     `env:"GAMELAN_EXECUTOR_KAFKA_ORDERING" envDefault:"unordered" doc:"Order of the tasks of one partition: unordered (concurrent), key (one at a time per record key, or runId when the record has no key; keys in parallel) or partition (one at a time)."`
	SASLMechanism         SASLMechanism     `env:"GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM" envDefault:"" doc:"SASL mechanism for the brokers: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no SASL."`
	SASLUsername          string            `env:"GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME" envDefault:"" doc:"SASL user; required with a mechanism."`
	SASLPassword          Secret            `env:"GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD" envDefault:"" doc:"SASL password. Never logged."`
	TLS                   bool              `env:"GAMELAN_EXECUTOR_KAFKA_TLS" envDefault:"false" doc:"Connect to the brokers over TLS."`
	CACertificatePath     File              `env:"GAMELAN_EXECUTOR_KAFKA_CA_CERTIFICATE_PATH" envDefault:"" doc:"PEM CA bundle the brokers' certificates must chain to; empty means the system roots. Must be readable when set."`
	ClientCertificatePath File              `env:"GAMELAN_EXECUTOR_KAFKA_CLIENT_CERTIFICATE_PATH" envDefault:"" doc:"PEM client certificate for brokers that require mutual TLS; must be readable when set."`
	ClientPrivateKeyPath  File              `env:"GAMELAN_EXECUTOR_KAFKA_CLIENT_PRIVATE_KEY_PATH" envDefault:"" doc:"PEM private key of KAFKA_CLIENT_CERTIFICATE_PATH; set both or neither."`
	// Dead-letter topic and idempotent producer (issue 18).
	DeadLetterTopic DeadLetterTopic `env:"GAMELAN_EXECUTOR_KAFKA_DEAD_LETTER_TOPIC" envDefault:"workflow.tasks.dlt" doc:"Topic that task records no result can name (undecodable, no valid ids) and tasks whose result could not be delivered are copied to, with their value, key and headers and dlt-* headers saying why; off turns dead-lettering off (such records are only logged and committed). An empty value means the default, like every variable. The topic must exist: it is never created."`
	Idempotent      Idempotence     `env:"GAMELAN_EXECUTOR_KAFKA_IDEMPOTENT" envDefault:"auto" doc:"Idempotent result producer (no duplicate records from producer retries): auto uses it where the brokers allow it and else logs a warning and produces without it; on fails instead; off never uses it."`
}

// Check applies the SASL and TLS rules, which span several variables.
func (k *Kafka) Check() []Problem {
	var problems []Problem
	if k.SASLMechanism != "" && strings.TrimSpace(k.SASLUsername) == "" {
		problems = append(problems, Problem{"GAMELAN_EXECUTOR_KAFKA_SASL_USERNAME",
			"must be set when GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM is"})
	}
	if (k.ClientCertificatePath == "") != (k.ClientPrivateKeyPath == "") {
		problems = append(problems, Problem{"GAMELAN_EXECUTOR_KAFKA_CLIENT_CERTIFICATE_PATH",
			"must be set together with KAFKA_CLIENT_PRIVATE_KEY_PATH, or both left empty"})
	}
	return problems
}

// DeadLetterTopic is the Kafka dead-letter topic: a topic name, or off.
type DeadLetterTopic string

// DeadLetterOff is the DeadLetterTopic value that turns dead-lettering off.
const DeadLetterOff DeadLetterTopic = "off"

// UnmarshalText accepts off or a topic name.
func (d *DeadLetterTopic) UnmarshalText(text []byte) error {
	if DeadLetterTopic(text) == DeadLetterOff {
		*d = DeadLetterOff
		return nil
	}
	var topic Topic
	if err := topic.UnmarshalText(text); err != nil {
		return errors.New("must be off or a Kafka topic name: 1-249 characters of a-z, A-Z, 0-9, ., _ and -, and not . or ..")
	}
	*d = DeadLetterTopic(topic)
	return nil
}

// Idempotence is whether the Kafka result producer is idempotent.
type Idempotence string

// UnmarshalText accepts auto, on and off.
func (i *Idempotence) UnmarshalText(text []byte) error { return oneOf(i, text, "auto", "on", "off") }

// KafkaOrdering is the order in which the tasks of one partition run.
type KafkaOrdering string

// UnmarshalText accepts unordered, key and partition.
func (o *KafkaOrdering) UnmarshalText(text []byte) error {
	return oneOf(o, text, "unordered", "key", "partition")
}

// SASLMechanism is how the Kafka client authenticates.
type SASLMechanism string

// UnmarshalText accepts PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
func (m *SASLMechanism) UnmarshalText(text []byte) error {
	return oneOf(m, text, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
}
