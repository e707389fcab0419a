package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is the service's OpenTelemetry tracing, set up from the standard
// OTEL_* variables (see NewTracing). When it is off, Tracer is nil: the
// runtime then starts no span and parses nothing per task.
type Tracing struct {
	// Tracer starts the runtime's spans; nil when tracing is off.
	Tracer trace.Tracer
	// Propagator reads and writes W3C trace context and baggage.
	Propagator propagation.TextMapPropagator
	// Endpoint is where spans are exported ("" when off, "default" when
	// the exporter's own default applies).
	Endpoint string
	// Protocol is the OTLP protocol: "grpc" or "http/protobuf".
	Protocol string

	// Provider is the provider Tracer comes from, for code that takes a
	// provider (the reference engine); nil when tracing is off.
	Provider trace.TracerProvider

	provider *sdktrace.TracerProvider
}

// The service.name of the spans when OTEL_SERVICE_NAME does not set one:
// the executor's, and the reference engine's.
const (
	DefaultServiceName = "gamelan-executor"
	EngineServiceName  = "gamelan-devengine"
)

// ShutdownTimeout bounds how long Shutdown waits for the last spans to be
// exported: an unreachable collector must not hold the service's exit.
const ShutdownTimeout = 5 * time.Second

// tracerName is the instrumentation scope of the runtime's spans.
const tracerName = "github.com/gamelan-go/executor"

// NewTracing sets up tracing from the standard OpenTelemetry variables,
// read through getenv. Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set or OTEL_TRACES_EXPORTER is
// "otlp", and off whenever OTEL_SDK_DISABLED is "true" or
// OTEL_TRACES_EXPORTER is "none". When on:
//
//   - spans are exported over OTLP, by the protocol that
//     OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
//     names: "grpc", or "http/protobuf" (the specification's default);
//   - the endpoint is the one those variables give; the exporter reads its
//     headers, TLS and timeout variables itself (from the process's
//     environment), and the SDK its sampler (OTEL_TRACES_SAMPLER) and batch
//     (OTEL_BSP_*) variables;
//   - the resource is service.name (OTEL_SERVICE_NAME, else service),
//     service.version (version), and
//     OTEL_RESOURCE_ATTRIBUTES;
//   - the propagator is W3C trace context and baggage.
//
// It logs whether tracing is on and where it exports. Call Shutdown when
// the service stops, to flush the spans still batched.
func NewTracing(ctx context.Context, getenv func(string) string, service, version string, log *slog.Logger) (*Tracing, error) {
	t := &Tracing{Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	if on, why := tracingOn(getenv); !on {
		log.Info("tracing is off", slog.String("reason", why))
		return t, nil
	}
	exporter, err := t.newExporter(ctx, getenv)
	if err != nil {
		return nil, err
	}
	res, err := newResource(getenv, service, version)
	if err != nil {
		return nil, err
	}
	// The sampler is the SDK's, which reads OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG (parent-based always-on by default).
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	t.Provider = t.provider
	t.Tracer = t.provider.Tracer(tracerName, trace.WithInstrumentationVersion(version))
	log.Info("tracing is on", slog.String("protocol", t.Protocol), slog.String("endpoint", t.Endpoint))
	return t, nil
}

// tracingOn decides whether tracing is on, and says why.
func tracingOn(getenv func(string) string) (bool, string) {
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch {
	case strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true"):
		return false, "OTEL_SDK_DISABLED is true"
	case exporter == "none":
		return false, "OTEL_TRACES_EXPORTER is none"
	case exporter == "otlp":
		return true, ""
	case getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "":
		return true, ""
	}
	return false, "no OTLP endpoint set (OTEL_EXPORTER_OTLP_ENDPOINT) and OTEL_TRACES_EXPORTER is not otlp"
}

// newExporter makes the OTLP exporter of the protocol configured, pointed
// at the endpoint configured, and records both in t.
func (t *Tracing) newExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	t.Protocol = firstSet(getenv, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	if t.Protocol == "" {
		t.Protocol = "http/protobuf"
	}
	// The endpoint is passed explicitly, so that what getenv says decides
	// (the exporters would read the process's environment). The signal's
	// own variable is used as given; the general one is a base URL, to
	// which the HTTP exporter appends the signal's path.
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	general := getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" && general != "" {
		endpoint = general
		if t.Protocol == "http/protobuf" {
			endpoint = strings.TrimSuffix(general, "/") + "/v1/traces"
		}
	}
	t.Endpoint = endpoint
	if endpoint == "" {
		t.Endpoint = "default"
	}
	var exporter sdktrace.SpanExporter
	var err error
	switch t.Protocol {
	case "grpc":
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		exporter, err = otlptracegrpc.New(ctx, opts...)
	case "http/protobuf":
		var opts []otlptracehttp.Option
		if endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		}
		exporter, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: must be grpc or http/protobuf", t.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (%s, %s): %w", t.Protocol, t.Endpoint, err)
	}
	return exporter, nil
}

// newResource describes the service: service.name, service.version and
// the attributes of OTEL_RESOURCE_ATTRIBUTES ("key=value,...", values
// URL-encoded), which may override neither of the first two that
// OTEL_SERVICE_NAME or version set.
func newResource(getenv func(string) string, service, version string) (*resource.Resource, error) {
	attrs, err := parseResourceAttributes(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if err != nil {
		return nil, err
	}
	name := getenv("OTEL_SERVICE_NAME")
	if name == "" {
		name = service
		for _, a := range attrs {
			if a.Key == "service.name" {
				name = a.Value.AsString()
			}
		}
	}
	attrs = append(attrs, attribute.String("service.name", name))
	if version != "" {
		attrs = append(attrs, attribute.String("service.version", version))
	}
	// Later attributes win over earlier ones with the same key.
	return resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
}

// parseResourceAttributes parses OTEL_RESOURCE_ATTRIBUTES.
func parseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	var attrs []attribute.KeyValue
	for pair := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		key, value, ok := strings.Cut(pair, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %q is not key=value", pair)
		}
		decoded, err := url.PathUnescape(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %s: %w", key, err)
		}
		attrs = append(attrs, attribute.String(key, decoded))
	}
	return attrs, nil
}

// firstSet returns the value of the first of keys that getenv sets.
func firstSet(getenv func(string) string, keys ...string) string {
	for _, k := range keys {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
	}
	return ""
}

// On reports whether tracing is on.
func (t *Tracing) On() bool { return t.Tracer != nil }

// Shutdown exports the spans still batched and stops the exporter, within
// ShutdownTimeout. It does nothing when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.provider == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
	defer cancel()
	if err := t.provider.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}
