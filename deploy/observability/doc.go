// Package observability holds the Grafana dashboard and the Prometheus alert
// rules built on the executor's metrics (grafana-dashboard.json,
// prometheus-rules.yaml; see README.md), and ExportedMetrics, the names the
// service exports, against which its tests check that both parse and name
// only real metrics, as the Kubernetes autoscalers' test does.
package observability
