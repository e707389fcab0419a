package telemetry

import "github.com/prometheus/client_golang/prometheus"

// DeadLetters counts the task records a Kafka source wrote to its
// dead-letter topic, and those it gave up writing, for one reason (the
// record's error class: unaddressable or result-undeliverable).
type DeadLetters struct {
	Reason          string
	Written, Failed int64
}

// ObserveKafkaDeadLetters adds the Kafka dead-letter counters, by reason,
// read from counts at each scrape: records written to the dead-letter
// topic, and records given up (committed without a copy) because writing
// failed for too long. Call it once.
func (m *Metrics) ObserveKafkaDeadLetters(counts func() []DeadLetters) {
	reason := []string{"reason"}
	m.registry.MustRegister(&deadLetterCollector{
		counts: counts,
		written: prometheus.NewDesc(namespace+"_kafka_dead_letters_total",
			"Task records written to the Kafka dead-letter topic, by reason (unaddressable, result-undeliverable).", reason, nil),
		failed: prometheus.NewDesc(namespace+"_kafka_dead_letter_failures_total",
			"Task records that could not be written to the Kafka dead-letter topic in time and were committed without a copy, by reason.", reason, nil),
	})
}

// deadLetterCollector reads the dead-letter counts at scrape time.
type deadLetterCollector struct {
	counts          func() []DeadLetters
	written, failed *prometheus.Desc
}

func (c *deadLetterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.written
	ch <- c.failed
}

func (c *deadLetterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.counts() {
		ch <- prometheus.MustNewConstMetric(c.written, prometheus.CounterValue, float64(d.Written), d.Reason)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(d.Failed), d.Reason)
	}
}
