package service

import (
	"fmt"
	"log/slog"

	kafkaadapter "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// The Kafka transport's pieces, built once each and shared by its ports:
// one producer (results, registrations, heartbeats) and one consumer group,
// never sharing a client.

// kafkaConfig maps the service configuration onto the Kafka adapters', once
// (certificates read and the result validated).
func (a *adapters) kafkaConfig() (kafkaadapter.Config, error) {
	if a.kafkaConf != nil {
		return *a.kafkaConf, nil
	}
	cfg := kafkaadapter.Config{
		Brokers:              a.cfg.KafkaBootstrapServers,
		GroupID:              a.cfg.KafkaGroupID,
		ClientID:             a.cfg.Name,
		TasksTopic:           a.cfg.KafkaTasksTopic,
		ResultsTopic:         a.cfg.KafkaResultsTopic,
		RegistrationsTopic:   a.cfg.KafkaRegistrationsTopic,
		HeartbeatsTopic:      a.cfg.KafkaHeartbeatsTopic,
		UnregistrationsTopic: a.cfg.KafkaUnregistrationsTopic,
		MaxMessageBytes:      a.cfg.KafkaMaxMessageBytes,
		SASL: kafkaadapter.SASL{
			Mechanism: a.cfg.KafkaSASLMechanism,
			User:      a.cfg.KafkaSASLUsername,
			Password:  a.cfg.KafkaSASLPassword,
		},
	}
	if a.cfg.KafkaTLS {
		tlsConfig, err := security.ClientTLSConfig(a.cfg.KafkaCACertificatePath, a.cfg.KafkaClientCertificatePath, a.cfg.KafkaClientPrivateKeyPath)
		if err != nil {
			return kafkaadapter.Config{}, fmt.Errorf("kafka TLS: %w", err)
		}
		cfg.TLS = tlsConfig
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	a.kafkaConf = &cfg
	return cfg, nil
}

// kafkaProducerFor returns the process's Kafka producer; its records carry
// a token naming their executor when tokens are on.
func (a *adapters) kafkaProducerFor() (*kafkaadapter.Producer, error) {
	if a.kafkaProducer != nil {
		return a.kafkaProducer, nil
	}
	cfg, err := a.kafkaConfig()
	if err != nil {
		return nil, err
	}
	minter, err := a.tokenMinter()
	if err != nil {
		return nil, err
	}
	producer, err := kafkaadapter.NewProducer(cfg)
	if err != nil {
		return nil, err
	}
	if minter != nil {
		producer.WithTokens(minter.Token)
	}
	a.kafkaProducer = producer
	a.onClose("kafka producer", producer.Close)
	return producer, nil
}

// kafkaResultSink returns the sink producing results, one per process.
func (a *adapters) kafkaResultSink() (*kafkaadapter.ResultSink, error) {
	if a.kafkaSink != nil {
		return a.kafkaSink, nil
	}
	producer, err := a.kafkaProducerFor()
	if err != nil {
		return nil, err
	}
	cfg, err := a.kafkaConfig()
	if err != nil {
		return nil, err
	}
	a.kafkaSink = kafkaadapter.NewResultSink(producer, cfg)
	return a.kafkaSink, nil
}

// kafkaTaskSource returns the consumer-group source of the tasks topic;
// closing it leaves the group, committing what the runtime settled.
func (a *adapters) kafkaTaskSource(served []domain.Registration) (*kafkaadapter.TaskSource, error) {
	if a.kafkaSource != nil {
		return a.kafkaSource, nil
	}
	cfg, err := a.kafkaConfig()
	if err != nil {
		return nil, err
	}
	source, err := kafkaadapter.NewTaskSource(cfg, served, a.log.With(slog.String("transport", "kafka")))
	if err != nil {
		return nil, err
	}
	a.kafkaSource = source
	a.onClose("kafka task source", source.Close)
	return source, nil
}
