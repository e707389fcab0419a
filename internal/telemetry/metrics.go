// Package telemetry exposes the executor's metrics in the Prometheus format
// on /q/metrics. Metrics implements the runtime's Observer (structurally:
// this package does not import the runtime) and reads its gauges from a
// snapshot function the service provides.
//
// Every label comes from a bounded set: executor types hosted by the
// process, transport names, the four result statuses and the four refusal
// reasons. Error codes are not labels: handlers choose them freely.
package telemetry

import (
	"maps"
	"net/http"
	"strconv"
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
	// Types holds each executor type's slots, queue and registration, by
	// executor type.
	Types map[string]domain.TypeLoad
	// Outbox counts results not yet acknowledged, by transport.
	Outbox map[string]int
}

// PartitionLag is one partition's consumer lag: the partition's high
// watermark (the offset the next record will get) minus the consumer
// group's committed offset, so the records not yet finished.
type PartitionLag struct {
	Topic     string
	Partition int32
	Lag       int64
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
			Namespace: namespace, Name: "tasks_refused_total", Help: "Tasks refused at intake, by transport and reason (overloaded, rate_limited, draining, invalid).",
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

// ObserveLoad adds the load gauges (tasks admitted, handlers running,
// slots, queue, saturation, work and registration by type, results in the
// outbox by transport), read from load at each scrape. Call it once.
func (m *Metrics) ObserveLoad(load func() Load) {
	byType := []string{"executor_type"}
	m.registry.MustRegister(&loadCollector{
		load:     load,
		admitted: prometheus.NewDesc(namespace+"_tasks_admitted", "Tasks queued or running.", nil, nil),
		running:  prometheus.NewDesc(namespace+"_tasks_running", "Handlers running, by executor type.", byType, nil),
		slotsInUse: prometheus.NewDesc(namespace+"_slots_in_use",
			"Concurrency slots held by handlers (including abandoned handlers still running), by executor type.", byType, nil),
		slotsFree: prometheus.NewDesc(namespace+"_slots_free",
			"Concurrency slots free (MaxConcurrentTasks minus slots in use), by executor type.", byType, nil),
		concurrencyLimit: prometheus.NewDesc(namespace+"_concurrency_limit",
			"Tasks that may run at once now, by executor type: MaxConcurrentTasks, or the adaptive limit (1 to MaxConcurrentTasks) of a type whose concurrency adapts. Slots free and saturation stay relative to MaxConcurrentTasks.", byType, nil),
		queued: prometheus.NewDesc(namespace+"_tasks_queued",
			"Tasks admitted and not yet running, by executor type.", byType, nil),
		oldestQueued: prometheus.NewDesc(namespace+"_oldest_queued_task_age_seconds",
			"How long the oldest task queued has waited, 0 when none, by executor type.", byType, nil),
		work: prometheus.NewDesc(namespace+"_work",
			"Tasks running plus tasks queued, by executor type: the work an autoscaler should count.", byType, nil),
		saturation: prometheus.NewDesc(namespace+"_saturation",
			"Tasks running plus queued over the slots (MaxConcurrentTasks), by executor type: above 1 tasks wait for a slot.", byType, nil),
		registered: prometheus.NewDesc(namespace+"_registered",
			"1 while the engine holds the executor type's registration, 0 otherwise, by executor type.", byType, nil),
		rateLimit: prometheus.NewDesc(namespace+"_rate_limit_tasks_per_second",
			"The rate limit configured, in tasks per second, 0 when none, by executor type.", byType, nil),
		outbox: prometheus.NewDesc(namespace+"_outbox_results",
			"Results not yet acknowledged by the engine or broker (queued or being delivered), by transport.", []string{"transport"}, nil),
	})
}

// ObserveConsumerLag adds the Kafka consumer lag gauge, by topic and
// partition, read from lag at each scrape: only the partitions the process
// holds now, so a partition revoked leaves no series behind. Call it once.
func (m *Metrics) ObserveConsumerLag(lag func() []PartitionLag) {
	m.registry.MustRegister(&lagCollector{
		lag: lag,
		desc: prometheus.NewDesc(namespace+"_kafka_consumer_lag",
			"Records of a partition not yet committed by the consumer group (high watermark minus committed offset), by topic and partition held.",
			[]string{"topic", "partition"}, nil),
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
	load                                   func() Load
	admitted, running                      *prometheus.Desc
	slotsInUse, slotsFree, queued          *prometheus.Desc
	oldestQueued, work, saturation, outbox *prometheus.Desc
	registered                             *prometheus.Desc
	concurrencyLimit                       *prometheus.Desc
	rateLimit                              *prometheus.Desc
}

func (c *loadCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.admitted, c.running, c.slotsInUse, c.slotsFree,
		c.queued, c.oldestQueued, c.work, c.saturation, c.outbox, c.registered, c.concurrencyLimit, c.rateLimit} {
		ch <- d
	}
}

func (c *loadCollector) Collect(ch chan<- prometheus.Metric) {
	load := c.load()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.admitted, float64(load.Admitted))
	for executorType, n := range load.Running {
		gauge(c.running, float64(n), executorType)
	}
	for executorType, t := range load.Types {
		gauge(c.slotsInUse, float64(t.SlotsInUse), executorType)
		gauge(c.slotsFree, float64(max(0, t.Slots-t.SlotsInUse)), executorType)
		if t.Limit > 0 { // 0: a load that does not report it
			gauge(c.concurrencyLimit, float64(t.Limit), executorType)
		}
		gauge(c.queued, float64(t.Queued), executorType)
		gauge(c.oldestQueued, t.OldestQueued.Seconds(), executorType)
		// Work counts the slots in use, not only the queue: between polls
		// a busy fleet's queue looks empty, and an autoscaler counting
		// only the queue would scale it down (keda#7459).
		work := float64(t.SlotsInUse + t.Queued)
		gauge(c.work, work, executorType)
		if t.Slots > 0 {
			gauge(c.saturation, work/float64(t.Slots), executorType)
		}
		registered := 0.0
		if t.Registered {
			registered = 1
		}
		gauge(c.registered, registered, executorType)
		gauge(c.rateLimit, t.RateLimit, executorType)
	}
	for transport, n := range load.Outbox {
		gauge(c.outbox, float64(n), transport)
	}
}

// lagCollector reads the consumer lag from a snapshot at scrape time.
type lagCollector struct {
	lag  func() []PartitionLag
	desc *prometheus.Desc
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.lag() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(p.Lag),
			p.Topic, strconv.Itoa(int(p.Partition)))
	}
}
