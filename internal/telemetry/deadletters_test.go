package telemetry_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gamelan-go/executor/internal/telemetry"
)

// The Kafka dead-letter counters are read from the source at each scrape,
// by reason.
func TestKafkaDeadLetters(t *testing.T) {
	m := telemetry.NewMetrics()
	counts := []telemetry.DeadLetters{{Reason: "unaddressable", Written: 3, Failed: 1}, {Reason: "result-undeliverable", Written: 2}}
	m.ObserveKafkaDeadLetters(func() []telemetry.DeadLetters { return counts })

	body := scrape(t, m)
	for _, line := range []string{
		"# TYPE gamelan_executor_kafka_dead_letters_total counter",
		`gamelan_executor_kafka_dead_letters_total{reason="unaddressable"} 3`,
		`gamelan_executor_kafka_dead_letters_total{reason="result-undeliverable"} 2`,
		"# TYPE gamelan_executor_kafka_dead_letter_failures_total counter",
		`gamelan_executor_kafka_dead_letter_failures_total{reason="unaddressable"} 1`,
		`gamelan_executor_kafka_dead_letter_failures_total{reason="result-undeliverable"} 0`,
	} {
		assert.Contains(t, body, line+"\n")
	}

	counts[0].Written = 4
	assert.Contains(t, scrape(t, m), `gamelan_executor_kafka_dead_letters_total{reason="unaddressable"} 4`+"\n")
}
