package health

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// LivenessService is the service name whose gRPC health status answers from
// the liveness checks alone, as /q/health/live does. Every other known name
// (the empty name and the served gRPC services) answers from the readiness
// and liveness checks, as /q/health/ready does.
const LivenessService = "liveness"

// DefaultWatchInterval is how often an open Watch evaluates the checks when
// NewGRPC is given no positive interval.
const DefaultWatchInterval = time.Second

// GRPC answers the gRPC health checking protocol (grpc.health.v1.Health)
// from the same checks as the HTTP probes, evaluated when asked, so that a
// gRPC probe and an HTTP probe never disagree:
//
//   - "" (the server as a whole) and each served service name: SERVING when
//     /q/health/ready would answer UP, NOT_SERVING otherwise (not registered
//     yet, intake not connected, draining, or a liveness check failing);
//   - LivenessService ("liveness"): SERVING when /q/health/live would
//     answer UP;
//   - any other name: Check fails with NOT_FOUND and Watch answers
//     SERVICE_UNKNOWN, as the protocol says.
//
// It needs no credentials: probes carry none, and it shows only statuses,
// never the checks' errors. Register it on a grpc.Server with
// healthpb.RegisterHealthServer.
type GRPC struct {
	healthpb.UnimplementedHealthServer

	probes   *Probes
	interval time.Duration
	// services are the names answered from readiness, "" included.
	services []string
}

var _ healthpb.HealthServer = (*GRPC)(nil)

// NewGRPC returns the gRPC health service of probes for a server that serves
// the gRPC services named (full names, such as
// "tech.kayys.gamelan.dispatcher.Executor"). An open Watch evaluates the
// checks every watchInterval (DefaultWatchInterval if not positive) and only
// while it is open.
func NewGRPC(probes *Probes, watchInterval time.Duration, services ...string) *GRPC {
	if watchInterval <= 0 {
		watchInterval = DefaultWatchInterval
	}
	names := append([]string{""}, services...)
	return &GRPC{probes: probes, interval: watchInterval, services: names}
}

// Check implements healthpb.HealthServer: the status of the service now.
func (g *GRPC) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	serving, known := g.status(req.GetService())
	if !known {
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.GetService())
	}
	return &healthpb.HealthCheckResponse{Status: serving}, nil
}

// List implements healthpb.HealthServer: the status of every known service.
// The checks are evaluated once for readiness and once for liveness.
func (g *GRPC) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	ready := servingStatus(g.probes.evaluate(readinessSet))
	statuses := make(map[string]*healthpb.HealthCheckResponse, len(g.services)+1)
	for _, name := range g.services {
		statuses[name] = &healthpb.HealthCheckResponse{Status: ready}
	}
	statuses[LivenessService] = &healthpb.HealthCheckResponse{Status: servingStatus(g.probes.evaluate(livenessSet))}
	return &healthpb.HealthListResponse{Statuses: statuses}, nil
}

// Watch implements healthpb.HealthServer: it sends the service's status now,
// then each change, until the caller ends the stream. An unknown service is
// answered SERVICE_UNKNOWN once; the names are fixed, so it never changes.
func (g *GRPC) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx := stream.Context()
	last, known := g.status(req.GetService())
	if !known {
		last = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	}
	if err := stream.Send(&healthpb.HealthCheckResponse{Status: last}); err != nil {
		return err
	}
	if !known {
		<-ctx.Done()
		return status.Error(codes.Canceled, "stream has ended")
	}
	// The checks are functions, not events, so a change is found by asking
	// again; the ticker lives only as long as this Watch.
	ticker := time.NewTicker(g.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return status.Error(codes.Canceled, "stream has ended")
		case <-ticker.C:
		}
		current, _ := g.status(req.GetService())
		if current == last {
			continue
		}
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: current}); err != nil {
			return err
		}
		last = current
	}
}

// status evaluates the checks behind service, reporting false for a name
// this server does not know.
func (g *GRPC) status(service string) (healthpb.HealthCheckResponse_ServingStatus, bool) {
	switch {
	case service == LivenessService:
		return servingStatus(g.probes.evaluate(livenessSet)), true
	case slices.Contains(g.services, service):
		return servingStatus(g.probes.evaluate(readinessSet)), true
	default:
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, false
	}
}

// servingStatus maps a probe's answer onto the gRPC statuses.
func servingStatus(r Response) healthpb.HealthCheckResponse_ServingStatus {
	if r.Status == StatusUp {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}
