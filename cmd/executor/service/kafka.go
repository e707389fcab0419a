package service

import (
	"fmt"
	"log/slog"

	"github.com/google/wire"

	kafkaadapter "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/config"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// kafkaSet provides what the Kafka transport, registrar and result sink
// share: the client configuration and one producer (results,
// registrations, heartbeats). The consumer group has a client of its own:
// sharing one between a producer and a consumer makes both slow.
var kafkaSet = wire.NewSet(newKafkaConfig, newKafkaProducer)

// newKafkaConfig maps the Kafka section onto the adapters' configuration
// when something uses Kafka, else returns nil.
func newKafkaConfig(s *settings, p *plan) (*kafkaadapter.Config, error) {
	if !p.uses("kafka") {
		return nil, nil
	}
	k := s.Kafka
	groupID := k.GroupID
	if groupID == "" {
		groupID = string(s.Name)
	}
	cfg := kafkaadapter.Config{
		Brokers:              k.BootstrapServers,
		GroupID:              groupID,
		ClientID:             string(s.Name),
		TasksTopic:           string(k.TasksTopic),
		ResultsTopic:         string(k.ResultsTopic),
		RegistrationsTopic:   string(k.RegistrationsTopic),
		HeartbeatsTopic:      string(k.HeartbeatsTopic),
		UnregistrationsTopic: string(k.UnregistrationsTopic),
		MaxMessageBytes:      int(k.MaxMessageBytes),
		Idempotence:          kafkaadapter.Idempotence(k.Idempotent),
		DeadLetterTopic:      deadLetterTopic(k.DeadLetterTopic),
		Ordering:             kafkaadapter.Ordering(k.Ordering),
		SASL: kafkaadapter.SASL{
			Mechanism: string(k.SASLMechanism),
			User:      k.SASLUsername,
			Password:  string(k.SASLPassword),
		},
	}
	if k.TLS {
		tlsConfig, err := security.ClientTLSConfig(string(k.CACertificatePath), string(k.ClientCertificatePath), string(k.ClientPrivateKeyPath))
		if err != nil {
			return nil, fmt.Errorf("kafka TLS: %w", err)
		}
		cfg.TLS = tlsConfig
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// deadLetterTopic maps the variable onto the adapters' setting, where an
// empty topic turns dead-lettering off.
func deadLetterTopic(topic config.DeadLetterTopic) string {
	if topic == config.DeadLetterOff {
		return ""
	}
	return string(topic)
}

// newKafkaProducer returns the process's producer, or nil without Kafka;
// its records carry a token naming their executor when tokens are on.
func newKafkaProducer(cfg *kafkaadapter.Config, tokens *security.Minter, log *slog.Logger) (*kafkaadapter.Producer, func(), error) {
	if cfg == nil {
		return nil, func() {}, nil
	}
	producer, err := kafkaadapter.NewProducer(*cfg)
	if err != nil {
		return nil, nil, err
	}
	producer.WithLog(log.With(slog.String("transport", "kafka")))
	if tokens != nil {
		producer.WithTokens(tokens.Token)
	}
	return producer, func() { closing(log, "kafka producer", producer.Close) }, nil
}

// buildKafka serves types from the tasks topic, in a consumer group, and
// answers on the results topic. Closing the source leaves the group,
// committing what the runtime settled.
func buildKafka(w *wiring, served []domain.Registration) (built, func(), error) {
	source, err := kafkaadapter.NewTaskSource(*w.kafka, served, w.log.With(slog.String("transport", "kafka")))
	if err != nil {
		return built{}, nil, err
	}
	return built{
		source:   source,
		sink:     kafkaResults(w),
		endpoint: w.kafka.TasksTopic, // Kafka executors are reached through the tasks topic
	}, closingSource(w.log, "kafka task source", source), nil
}

// kafkaResults is the sink producing results to the results topic.
func kafkaResults(w *wiring) *kafkaadapter.ResultSink {
	return kafkaadapter.NewResultSink(w.producer, *w.kafka)
}

// kafkaRegistrar registers on the registration and heartbeat topics.
func kafkaRegistrar(w *wiring) (controlPlane, error) {
	return controlPlane{
		registrar:   kafkaadapter.NewRegistrar(w.producer, *w.kafka),
		heartbeater: kafkaadapter.NewHeartbeater(w.producer, *w.kafka),
	}, nil
}
