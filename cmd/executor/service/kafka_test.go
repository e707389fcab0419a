package service

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	kafkaadapter "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/config"
)

// The dead-letter and idempotence variables reach the adapters: off turns
// dead-lettering off (the adapters' empty topic).
func TestKafkaConfigDeadLetterAndIdempotence(t *testing.T) {
	s := &settings{Kafka: config.Kafka{BootstrapServers: config.HostPorts{"127.0.0.1:9092"}, DeadLetterTopic: "tasks.dlt", Idempotent: "on"}}
	p := &plan{registrar: "kafka"}
	cfg, err := newKafkaConfig(s, p)
	require.NoError(t, err)
	assert.Equal(t, "tasks.dlt", cfg.DeadLetterTopic)
	assert.Equal(t, kafkaadapter.IdempotenceOn, cfg.Idempotence)

	s.Kafka.DeadLetterTopic = config.DeadLetterOff
	cfg, err = newKafkaConfig(s, p)
	require.NoError(t, err)
	assert.Empty(t, cfg.DeadLetterTopic)
}
