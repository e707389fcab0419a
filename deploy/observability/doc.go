// Package observability holds the Grafana dashboard and the Prometheus alert
// rules built on the executor's metrics (grafana-dashboard.json,
// prometheus-rules.yaml; see README.md). It has no code: its test checks
// that both parse and name only metrics the service exports.
package observability
