package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/gamelan-go/executor/deploy/observability"
	"github.com/gamelan-go/executor/internal/health"
)

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) the
// manifests use, field for field as KEDA names them: decoding rejects any
// other field, so a misspelt one fails here instead of being ignored.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// rendered is one overlay built by kustomize, each document decoded
// strictly into its type.
type rendered struct {
	deployment     *appsv1.Deployment
	services       []*corev1.Service
	secrets        []*corev1.Secret
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *monitoringv1.ServiceMonitor
	scaledObject   *scaledObject
}

// render builds an overlay as `kubectl kustomize` does, offline.
func render(t *testing.T, overlay string) rendered {
	t.Helper()
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "kubernetes/overlays/"+overlay)
	require.NoError(t, err, overlay)
	var r rendered
	for _, resource := range resources.Resources() {
		doc, err := resource.AsYAML()
		require.NoError(t, err)
		require.NoError(t, r.add(doc), "%s: %s %s", overlay, resource.GetKind(), resource.GetName())
	}
	return r
}

// add decodes one document by its kind, strictly.
func (r *rendered) add(doc []byte) error {
	var head struct{ APIVersion, Kind string }
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 Deployment":
		r.deployment = new(appsv1.Deployment)
		return strict(doc, r.deployment)
	case "v1 Service":
		s := new(corev1.Service)
		r.services = append(r.services, s)
		return strict(doc, s)
	case "v1 Secret":
		s := new(corev1.Secret)
		r.secrets = append(r.secrets, s)
		return strict(doc, s)
	case "policy/v1 PodDisruptionBudget":
		r.pdb = new(policyv1.PodDisruptionBudget)
		return strict(doc, r.pdb)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		r.serviceMonitor = new(monitoringv1.ServiceMonitor)
		return strict(doc, r.serviceMonitor)
	case "keda.sh/v1alpha1 ScaledObject":
		r.scaledObject = new(scaledObject)
		return strict(doc, r.scaledObject)
	}
	return fmt.Errorf("no strict type for %s %s", head.APIVersion, head.Kind)
}

// strict decodes a YAML document into v, rejecting fields v does not have.
func strict(doc []byte, v any) error {
	data, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	return decoder.Decode(v)
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	assert.ErrorContains(t, strict([]byte("apiVersion: policy/v1\nkind: PodDisruptionBudget\nspec:\n  maxUnavailabel: 1\n"), new(policyv1.PodDisruptionBudget)), "maxUnavailabel")
	assert.ErrorContains(t, strict([]byte("spec:\n  triggers:\n    - type: kafka\n      metdata: {}\n"), new(scaledObject)), "metdata")
}

// overlays are the Kubernetes overlays the tests render and check; the
// README's commands may name only these (see TestREADMEDeployCommands).
var overlays = []string{"grpc-push", "kafka"}

func TestOverlaysRenderAndDecodeStrictly(t *testing.T) {
	for _, overlay := range overlays {
		r := render(t, overlay)
		require.NotNil(t, r.deployment, overlay)
		require.NotNil(t, r.pdb, overlay)
		require.NotNil(t, r.serviceMonitor, overlay)
		require.NotNil(t, r.scaledObject, overlay)
		require.Len(t, r.services, 1, overlay)
		require.Len(t, r.secrets, 1, overlay)
		checkPod(t, overlay, r)

		assert.Equal(t, r.deployment.Name, r.scaledObject.Spec.ScaleTargetRef.Name, overlay)
		assert.Equal(t, r.deployment.Spec.Selector.MatchLabels, r.pdb.Spec.Selector.MatchLabels, overlay)
		assert.Equal(t, r.deployment.Spec.Selector.MatchLabels, r.services[0].Spec.Selector, overlay)
		require.Len(t, r.serviceMonitor.Spec.Endpoints, 1, overlay)
		assert.Equal(t, "/q/metrics", r.serviceMonitor.Spec.Endpoints[0].Path, overlay)
		assert.Equal(t, "http", r.serviceMonitor.Spec.Endpoints[0].Port, overlay)
		assert.Subset(t, r.services[0].Labels, r.serviceMonitor.Spec.Selector.MatchLabels, "%s: the ServiceMonitor selects the Service", overlay)
		for key, value := range r.secrets[0].StringData {
			assert.True(t, strings.Contains(value, "PLACEHOLDER"), "%s: secret %s is marked as a placeholder", overlay, key)
		}
	}
}

func TestGRPCPushOverlay(t *testing.T) {
	r := render(t, "grpc-push")
	env := environment(r.deployment)
	assert.Equal(t, "grpc", env["GAMELAN_EXECUTOR_TRANSPORT"])
	assert.Equal(t, env["GAMELAN_EXECUTOR_GRPC_PORT"], strconv.Itoa(int(port(t, r.deployment, "grpc"))))
	assert.Equal(t, "$(POD_IP):"+env["GAMELAN_EXECUTOR_GRPC_PORT"], env["GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT"])
	// Kubernetes expands $(POD_IP) only from variables defined before it.
	names := envNames(r.deployment)
	assert.Less(t, slices.Index(names, "POD_IP"), slices.Index(names, "GAMELAN_EXECUTOR_GRPC_ADVERTISED_ENDPOINT"))
	assert.True(t, slices.ContainsFunc(r.services[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "grpc" && p.TargetPort.StrVal == "grpc" }),
		"the Service exposes the push intake")

	require.Len(t, r.scaledObject.Spec.Triggers, 1)
	trigger := r.scaledObject.Spec.Triggers[0]
	assert.Equal(t, "prometheus", trigger.Type)
	assert.Contains(t, trigger.Metadata["query"], "gamelan_executor_saturation")
	exported, err := observability.ExportedMetrics()
	require.NoError(t, err)
	assert.True(t, exported["gamelan_executor_saturation"], "the autoscalers scale on a metric the service exports")
	assert.ElementsMatch(t, []string{"serverAddress", "query", "threshold"}, keys(trigger.Metadata))

	// The HPA example for clusters without KEDA: not in the overlay (two
	// autoscalers would fight), decoded on its own.
	doc, err := os.ReadFile("kubernetes/overlays/grpc-push/hpa.yaml")
	require.NoError(t, err)
	var hpa autoscalingv2.HorizontalPodAutoscaler
	require.NoError(t, strict(doc, &hpa))
	assert.Equal(t, r.deployment.Name, hpa.Spec.ScaleTargetRef.Name)
	require.Len(t, hpa.Spec.Metrics, 1)
	assert.Equal(t, "gamelan_executor_saturation", hpa.Spec.Metrics[0].Pods.Metric.Name)
}

func TestKafkaOverlay(t *testing.T) {
	r := render(t, "kafka")
	env := environment(r.deployment)
	assert.Equal(t, "kafka", env["GAMELAN_EXECUTOR_TRANSPORT"])
	require.Len(t, r.scaledObject.Spec.Triggers, 1)
	trigger := r.scaledObject.Spec.Triggers[0]
	assert.Equal(t, "kafka", trigger.Type)
	assert.ElementsMatch(t, []string{"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}, keys(trigger.Metadata))
	// The lag KEDA reads is the lag of the group and topic the executor uses.
	assert.Equal(t, env["GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS"], trigger.Metadata["bootstrapServers"])
	assert.Equal(t, env["GAMELAN_EXECUTOR_KAFKA_GROUP_ID"], trigger.Metadata["consumerGroup"])
	assert.Equal(t, env["GAMELAN_EXECUTOR_KAFKA_TASKS_TOPIC"], trigger.Metadata["topic"])
	_, err := strconv.Atoi(trigger.Metadata["lagThreshold"])
	assert.NoError(t, err)
}

// checkPod checks what every overlay's pod must hold: probes, security,
// the shutdown budget, and only variables the executor reads.
func checkPod(t *testing.T, overlay string, r rendered) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	require.Len(t, pod.Containers, 1, overlay)
	c := pod.Containers[0]
	env := environment(r.deployment)
	httpPort := port(t, r.deployment, "http")
	assert.Equal(t, env["GAMELAN_EXECUTOR_HTTP_PORT"], strconv.Itoa(int(httpPort)), overlay)

	// Liveness never involves the engine: only the live path, which
	// evaluates the liveness checks alone.
	probePath := func(p *corev1.Probe) string {
		require.NotNil(t, p, overlay)
		require.NotNil(t, p.HTTPGet, overlay)
		assert.Equal(t, "http", p.HTTPGet.Port.StrVal, overlay)
		return p.HTTPGet.Path
	}
	assert.Equal(t, health.LivePath, probePath(c.LivenessProbe), overlay)
	assert.Equal(t, health.ReadyPath, probePath(c.ReadinessProbe), overlay)
	assert.Equal(t, health.StartedPath, probePath(c.StartupProbe), overlay)

	require.NotNil(t, c.SecurityContext, overlay)
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem, overlay)
	assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation, overlay)
	assert.True(t, *pod.SecurityContext.RunAsNonRoot, overlay)
	assert.NotEmpty(t, c.Resources.Requests, overlay)
	assert.NotEmpty(t, c.Resources.Limits, overlay)

	// The grace period, which starts with the preStop, holds the preStop
	// sleep, the drain and the flush, all read from the rendered manifest;
	// and the executor is told the same figures for its start-up check.
	require.NotNil(t, c.Lifecycle, overlay)
	require.NotNil(t, c.Lifecycle.PreStop, overlay)
	require.NotNil(t, c.Lifecycle.PreStop.Sleep, overlay)
	preStop := c.Lifecycle.PreStop.Sleep.Seconds
	grace := *pod.TerminationGracePeriodSeconds
	drain, flush := number(t, env, "GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS"), number(t, env, "GAMELAN_EXECUTOR_RESULT_FLUSH_TIMEOUT_SECONDS")
	assert.GreaterOrEqual(t, grace, preStop+drain+flush, "%s: terminationGracePeriodSeconds covers preStop + drain + flush", overlay)
	assert.Equal(t, grace, number(t, env, "GAMELAN_EXECUTOR_TERMINATION_GRACE_PERIOD_SECONDS"), overlay)
	assert.Equal(t, preStop, number(t, env, "GAMELAN_EXECUTOR_PRE_STOP_SECONDS"), overlay)

	for _, name := range envNames(r.deployment) {
		if name == "POD_IP" {
			continue // only for $(POD_IP) in the advertised endpoint
		}
		assert.Contains(t, executorVariables(), name, "%s sets a variable the executor does not read", overlay)
	}
}

// environment is the executor container's variables with literal values.
func environment(d *appsv1.Deployment) map[string]string {
	env := make(map[string]string)
	for _, v := range d.Spec.Template.Spec.Containers[0].Env {
		env[v.Name] = v.Value
	}
	return env
}

// envNames is the executor container's variables in order.
func envNames(d *appsv1.Deployment) []string {
	var names []string
	for _, v := range d.Spec.Template.Spec.Containers[0].Env {
		names = append(names, v.Name)
	}
	return names
}

// port is the container port of the given name.
func port(t *testing.T, d *appsv1.Deployment, name string) int32 {
	t.Helper()
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("no container port %q", name)
	return 0
}

// number is a whole-number variable.
func number(t *testing.T, env map[string]string, name string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(env[name], 10, 64)
	require.NoError(t, err, name)
	return n
}

// keys are a map's keys.
func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
