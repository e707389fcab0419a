// Package telemetry exposes the executor's metrics in the Prometheus format
// on /q/metrics. Metrics implements the runtime's Observer (structurally:
// this package does not import the runtime) and reads its gauges from a
// snapshot function the service provides.
//
// Every label comes from a bounded set: executor types hosted by the
// process, transport names, the four result statuses and the three refusal
// reasons. Error codes are not labels: handlers choose them freely.
package telemetry

import (
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gamelan-go/executor/internal/domain"
)

const namespace = "gamelan_executor"

// Load is a snapshot of the runtime's load for the gauges.
type Load struct {
	// Admitted is the number of tasks queued or running.
	Admitted int
	// Running is the number of running handlers by executor type.
	Running map[string]int
}

// Metrics holds the executor's Prometheus metrics and their registry.
type Metrics struct {
	registry            *prometheus.Registry
	tasks               *prometheus.CounterVec
	taskDuration        *prometheus.HistogramVec
	refused             *prometheus.CounterVec
	delivered           *prometheus.CounterVec
	deliveryLatency     *prometheus.HistogramVec
	deliveryRetries     *prometheus.CounterVec
	undelivered         *prometheus.CounterVec
	deadLettered        *prometheus.CounterVec
	abandoned           *prometheus.CounterVec
	heartbeatFailures   *prometheus.CounterVec
	registrationFailure *prometheus.CounterVec

	// finished and deliveries hold the metrics the runtime records for
	// every task and every batch, by label values (see labelCache).
	finished   labelCache[finishedLabels, finishedMetrics]
	deliveries labelCache[string, deliveryMetrics]
}

type finishedLabels struct {
	executorType string
	status       domain.Status
}

type finishedMetrics struct {
	tasks    prometheus.Counter
	duration prometheus.Observer
}

type deliveryMetrics struct {
	delivered prometheus.Counter
	latency   prometheus.Observer
}

// labelCache keeps the metrics of each set of label values once looked up.
// A vector's WithLabelValues hashes the values and takes a read lock on
// every call, which workers recording every task would share; the cache is
// read without a lock. Label values come from bounded sets, so the cache
// stays small, and a new set copies it.
type labelCache[K comparable, V any] struct {
	mu      sync.Mutex // serialises additions
	entries atomic.Pointer[map[K]V]
}

// get returns the metrics for key, looking them up with lookup the first
// time.
func (c *labelCache[K, V]) get(key K, lookup func(K) V) V {
	if m := c.entries.Load(); m != nil {
		if v, ok := (*m)[key]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var grown map[K]V
	if m := c.entries.Load(); m != nil {
		if v, ok := (*m)[key]; ok {
			return v
		}
		grown = maps.Clone(*m)
	} else {
		grown = make(map[K]V)
	}
	v := lookup(key)
	grown[key] = v
	c.entries.Store(&grown)
	return v
}

// NewMetrics registers the executor's metrics, the Go runtime's and the
// process's in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tasks_total", Help: "Tasks finished, by executor type and result status.",
		}, []string{"executor_type", "status"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "task_duration_seconds", Help: "How long handlers ran, by executor type.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1ms .. ~4.4min
		}, []string{"executor_type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tasks_refused_total", Help: "Tasks refused at intake, by transport and reason (overloaded, draining, invalid).",
		}, []string{"transport", "reason"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_delivered_total", Help: "Results acknowledged by the engine or broker, by transport.",
		}, []string{"transport"}),
		deliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "result_delivery_seconds", Help: "Time from a task's completion to its result's acknowledgement, by transport.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5ms .. ~2.2min
		}, []string{"transport"}),
		deliveryRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "result_delivery_retries_total", Help: "Failed result deliveries that were retried, by transport.",
		}, []string{"transport"}),
		undelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_undelivered_total", Help: "Results given up at shutdown, by transport.",
		}, []string{"transport"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "results_dead_lettered_total",
			Help: "Results the engine or broker refused for good, even in their minimal FAILED form, and dropped, by transport.",
		}, []string{"transport"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "handlers_abandoned_total",
			Help: "Handlers still running when their context ended (deadline, cancellation, shutdown), by executor type.",
		}, []string{"executor_type"}),
		heartbeatFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "heartbeat_failures_total", Help: "Failed heartbeats, by executor type.",
		}, []string{"executor_type"}),
		registrationFailure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "registration_failures_total", Help: "Failed registrations, by executor type.",
		}, []string{"executor_type"}),
	}
	m.registry.MustRegister(
		m.tasks, m.taskDuration, m.refused, m.delivered, m.deliveryLatency, m.deliveryRetries,
		m.undelivered, m.deadLettered, m.abandoned, m.heartbeatFailures, m.registrationFailure,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveLoad adds the load gauges (tasks admitted, handlers running by
// type), read from load at each scrape. Call it once.
func (m *Metrics) ObserveLoad(load func() Load) {
	m.registry.MustRegister(&loadCollector{
		load:     load,
		admitted: prometheus.NewDesc(namespace+"_tasks_admitted", "Tasks queued or running.", nil, nil),
		running:  prometheus.NewDesc(namespace+"_tasks_running", "Handlers running, by executor type.", []string{"executor_type"}, nil),
	})
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// TaskFinished implements the runtime's Observer.
func (m *Metrics) TaskFinished(executorType string, status domain.Status, duration time.Duration) {
	f := m.finished.get(finishedLabels{executorType, status}, m.lookupFinished)
	f.tasks.Inc()
	f.duration.Observe(duration.Seconds())
}

func (m *Metrics) lookupFinished(l finishedLabels) finishedMetrics {
	return finishedMetrics{
		tasks:    m.tasks.WithLabelValues(l.executorType, string(l.status)),
		duration: m.taskDuration.WithLabelValues(l.executorType),
	}
}

// TaskRefused implements the runtime's Observer.
func (m *Metrics) TaskRefused(transport, reason string) {
	m.refused.WithLabelValues(transport, reason).Inc()
}

// ResultsDelivered implements the runtime's Observer.
func (m *Metrics) ResultsDelivered(transport string, results int, latency time.Duration) {
	d := m.deliveries.get(transport, m.lookupDelivery)
	d.delivered.Add(float64(results))
	d.latency.Observe(latency.Seconds())
}

func (m *Metrics) lookupDelivery(transport string) deliveryMetrics {
	return deliveryMetrics{
		delivered: m.delivered.WithLabelValues(transport),
		latency:   m.deliveryLatency.WithLabelValues(transport),
	}
}

// DeliveryRetried implements the runtime's Observer.
func (m *Metrics) DeliveryRetried(transport string) {
	m.deliveryRetries.WithLabelValues(transport).Inc()
}

// ResultsUndelivered implements the runtime's Observer.
func (m *Metrics) ResultsUndelivered(transport string, results int) {
	m.undelivered.WithLabelValues(transport).Add(float64(results))
}

// ResultDeadLettered implements the runtime's Observer.
func (m *Metrics) ResultDeadLettered(transport string) {
	m.deadLettered.WithLabelValues(transport).Inc()
}

// HandlerAbandoned implements the runtime's Observer.
func (m *Metrics) HandlerAbandoned(executorType string) {
	m.abandoned.WithLabelValues(executorType).Inc()
}

// HeartbeatFailed implements the runtime's Observer.
func (m *Metrics) HeartbeatFailed(executorType string) {
	m.heartbeatFailures.WithLabelValues(executorType).Inc()
}

// RegistrationFailed implements the runtime's Observer.
func (m *Metrics) RegistrationFailed(executorType string) {
	m.registrationFailure.WithLabelValues(executorType).Inc()
}

// loadCollector reads the gauges from a snapshot at scrape time, so the
// runtime pays nothing for them between scrapes.
type loadCollector struct {
	load              func() Load
	admitted, running *prometheus.Desc
}

func (c *loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.admitted
	ch <- c.running
}

func (c *loadCollector) Collect(ch chan<- prometheus.Metric) {
	load := c.load()
	ch <- prometheus.MustNewConstMetric(c.admitted, prometheus.GaugeValue, float64(load.Admitted))
	for executorType, n := range load.Running {
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(n), executorType)
	}
}
