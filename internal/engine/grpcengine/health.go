package grpcengine

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

// livenessService is the health name the executor answers from its
// liveness checks (internal/health.LivenessService); the engine answers it
// too, so that one probe configuration fits both.
const livenessService = "liveness"

// healthMethodPrefix starts the full method name of every call of the
// standard health service.
var healthMethodPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// isHealthCall reports whether fullMethod belongs to the health service,
// which Config.Auth does not guard: probes carry no credentials.
func isHealthCall(fullMethod string) bool { return strings.HasPrefix(fullMethod, healthMethodPrefix) }

// healthService answers the gRPC health checking protocol for one serve:
// "", the ExecutorService and "liveness" are SERVING until Shutdown begins
// and NOT_SERVING from then on; other names are unknown (NOT_FOUND on Check,
// SERVICE_UNKNOWN on Watch). The engine has no checks of its own (its HTTP
// /healthz always answers UP), so the status changes only at Shutdown, and a
// Watch waits for that instead of polling.
type healthService struct {
	healthpb.UnimplementedHealthServer
	// stopping is the serve's: closed when Shutdown begins.
	stopping <-chan struct{}
}

var _ healthpb.HealthServer = healthService{}

// Check implements healthpb.HealthServer.
func (h healthService) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	serving, known := h.status(req.GetService())
	if !known {
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.GetService())
	}
	return &healthpb.HealthCheckResponse{Status: serving}, nil
}

// List implements healthpb.HealthServer.
func (h healthService) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	statuses := make(map[string]*healthpb.HealthCheckResponse)
	for _, name := range []string{"", gamelanv1.ExecutorService_ServiceDesc.ServiceName, livenessService} {
		serving, _ := h.status(name)
		statuses[name] = &healthpb.HealthCheckResponse{Status: serving}
	}
	return &healthpb.HealthListResponse{Statuses: statuses}, nil
}

// Watch implements healthpb.HealthServer: the status now, then NOT_SERVING
// when Shutdown begins, after which the stream ends with codes.Unavailable
// like the task streams, so that a graceful stop does not wait for a probe.
func (h healthService) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	serving, known := h.status(req.GetService())
	if err := stream.Send(&healthpb.HealthCheckResponse{Status: serving}); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
		return status.Error(codes.Canceled, "stream has ended")
	case <-h.stopping:
	}
	if known && serving == healthpb.HealthCheckResponse_SERVING {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "engine shutting down")
}

// status is the status of service, and whether it is a known name.
func (h healthService) status(service string) (healthpb.HealthCheckResponse_ServingStatus, bool) {
	switch service {
	case "", gamelanv1.ExecutorService_ServiceDesc.ServiceName, livenessService:
	default:
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, false
	}
	select {
	case <-h.stopping:
		return healthpb.HealthCheckResponse_NOT_SERVING, true
	default:
		return healthpb.HealthCheckResponse_SERVING, true
	}
}
