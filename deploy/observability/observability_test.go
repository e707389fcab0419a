package observability

import (
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// promql parses the expressions of the rules and the dashboard.
var promql = parser.NewParser(parser.Options{})

// TestRulesParseAndNameExportedMetrics: the alert rules pass the
// Prometheus rule parser (the one `promtool check rules` uses), each alert
// has a severity, a summary and a description, the alerts the issue asks
// for are there, and every metric an expression names is one the service
// exports.
func TestRulesParseAndNameExportedMetrics(t *testing.T) {
	content, err := os.ReadFile("prometheus-rules.yaml")
	require.NoError(t, err)
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	require.Empty(t, errs, "prometheus-rules.yaml")
	require.NotEmpty(t, groups.Groups)

	exported := exportedMetrics(t)
	var alerts []string
	for _, g := range groups.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
			assert.NotEmpty(t, rule.Alert, "group %s: a rule that is not an alert", g.Name)
			assert.Contains(t, []string{"critical", "warning", "info"}, rule.Labels["severity"], rule.Alert)
			assert.NotEmpty(t, rule.Annotations["summary"], rule.Alert)
			assert.NotEmpty(t, rule.Annotations["description"], rule.Alert)
			checkNames(t, "alert "+rule.Alert, rule.Expr, exported)
		}
	}
	for _, want := range []string{
		"GamelanExecutorRegistrationLost", "GamelanExecutorHeartbeatsFailing", "GamelanExecutorResultDeliveryRetrying",
		"GamelanExecutorSaturated", "GamelanExecutorConsumerLagGrowing", "GamelanExecutorNoTasksAnsweredWhileQueued",
	} {
		assert.Contains(t, alerts, want)
	}
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// TestDashboardDecodesAndNamesExportedMetrics: the dashboard is JSON that
// Grafana imports (a schema version, the data source a variable), each
// panel has a title and at least one query, and every metric a query or a
// variable names is one the service exports.
func TestDashboardDecodesAndNamesExportedMetrics(t *testing.T) {
	content, err := os.ReadFile("grafana-dashboard.json")
	require.NoError(t, err)
	var d dashboard
	decoder := json.NewDecoder(strings.NewReader(string(content)))
	require.NoError(t, decoder.Decode(&d), "grafana-dashboard.json")
	assert.NotEmpty(t, d.Title)
	assert.GreaterOrEqual(t, d.SchemaVersion, 36, "schema version")

	var variables []string
	exported := exportedMetrics(t)
	for _, v := range d.Templating.List {
		variables = append(variables, v.Name)
		if v.Type == "query" {
			// label_values(metric, label) is Grafana's, not PromQL.
			m := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),\s*\w+\)$`).FindStringSubmatch(v.Definition)
			if assert.NotNil(t, m, "variable %s: %q", v.Name, v.Definition) {
				assert.Contains(t, exported, m[1], "variable %s", v.Name)
			}
		}
	}
	assert.Subset(t, variables, []string{"datasource", "executor_type", "instance"})

	queries := 0
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		assert.NotEmpty(t, p.Title, "a panel without a title")
		assert.Equal(t, "${datasource}", p.Datasource.UID, "panel %q: data source", p.Title)
		assert.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, target := range p.Targets {
			checkNames(t, "panel "+p.Title, substituteVariables(target.Expr), exported)
			queries++
		}
	}
	assert.Greater(t, queries, 10)
}

// grafanaVariable matches $name and ${name}, the forms the dashboard uses.
var grafanaVariable = regexp.MustCompile(`\$\{?(\w+)\}?`)

// substituteVariables replaces Grafana's variables with what they could
// be at query time, so that the expression parses as PromQL: intervals by a
// duration, the dashboard's own variables by a regular expression.
func substituteVariables(expr string) string {
	return grafanaVariable.ReplaceAllStringFunc(expr, func(v string) string {
		name := grafanaVariable.FindStringSubmatch(v)[1]
		if strings.HasPrefix(name, "__") && strings.HasSuffix(name, "interval") {
			return "5m"
		}
		return ".*"
	})
}

// checkNames parses expr as PromQL and checks that every metric it selects
// is in exported.
func checkNames(t *testing.T, where, expr string, exported map[string]bool) {
	t.Helper()
	parsed, err := promql.ParseExpr(expr)
	if !assert.NoError(t, err, "%s: %s", where, expr) {
		return
	}
	names := 0
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		selector, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := selector.Name
		for _, m := range selector.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		names++
		assert.True(t, exported[name], "%s: metric %q is not exported by the service (expr %s)", where, name, expr)
		return nil
	})
	assert.Positive(t, names, "%s names no metric: %s", where, expr)
}

// exportedMetrics returns ExportedMetrics, checking it holds the scaling
// signal among the rest.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	exported, err := ExportedMetrics()
	require.NoError(t, err)
	for _, name := range []string{"gamelan_executor_tasks_total", "gamelan_executor_kafka_consumer_lag", "gamelan_executor_registered", "gamelan_executor_saturation"} {
		require.True(t, exported[name], "%s missing from the scrape: %s", name, slices.Sorted(maps.Keys(exported)))
	}
	return exported
}
