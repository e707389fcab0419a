package service

import (
	"log/slog"
	"net"
	"strconv"

	grpcadapter "github.com/gamelan-go/executor/internal/adapters/grpc"
	"github.com/gamelan-go/executor/internal/adapters/rest"
	"github.com/gamelan-go/executor/internal/domain"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/ports"
)

// The HTTP pieces: the client of the engine's REST registry, and the REST
// task intake.

// engineClient returns the client of the engine's REST registry.
func (a *adapters) engineClient() (*rest.Client, error) {
	if a.restClient != nil {
		return a.restClient, nil
	}
	minter, err := a.tokenMinter()
	if err != nil {
		return nil, err
	}
	cfg := rest.ClientConfig{BaseURL: a.cfg.EngineURL, Timeout: a.cfg.EngineHTTPTimeout()}
	if minter != nil {
		cfg.Token = minter.Token
	}
	client, err := rest.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	a.restClient = client
	return client, nil
}

// restIntake returns the REST task intake, listening from now on.
func (a *adapters) restIntake(served []domain.Registration) (*rest.Intake, error) {
	if a.restSource != nil {
		return a.restSource, nil
	}
	authenticate, err := a.inboundAuthenticator()
	if err != nil {
		return nil, err
	}
	intake, err := rest.NewIntake(rest.IntakeConfig{
		Address:      net.JoinHostPort(a.cfg.RESTHost, strconv.Itoa(a.cfg.RESTPort)),
		MaxBodyBytes: int64(a.cfg.RESTMaxBodyBytes),
		Authenticate: authenticate,
		Executors:    served,
	}, a.log.With(slog.String("component", "rest-intake")))
	if err != nil {
		return nil, err
	}
	a.restSource = intake
	a.onClose("rest intake", func() error { intake.Close(pushCloseTimeout); return nil })
	return intake, nil
}

// restResultSink returns where results of REST tasks go (REST_RESULT_SINK):
// the engine's ReportResults, or the results topic.
func (a *adapters) restResultSink() (ports.ResultSink, error) {
	if a.cfg.RESTResultSink == "kafka" {
		return a.kafkaResultSink()
	}
	conn, err := a.grpcConnection()
	if err != nil {
		return nil, err
	}
	return grpcadapter.NewResultSink(gamelanv1.NewExecutorServiceClient(conn), a.cfg.GRPCMaxMessageSize).Watching(a.grpcWatch), nil
}

// restEndpoint is the URL registered for REST types.
func (a *adapters) restEndpoint() string {
	if a.cfg.RESTAdvertisedEndpoint != "" {
		return a.cfg.RESTAdvertisedEndpoint
	}
	return "http://" + advertisedAddress(a.restSource.Addr()) + rest.TaskPath
}

// advertisedAddress is a bound address the engine can dial: itself when
// it is a specific address, else the host name with its port (0.0.0.0 is
// not an address the engine can dial).
func advertisedAddress(bound net.Addr) string {
	host, port, _ := net.SplitHostPort(bound.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = hostName()
	}
	return net.JoinHostPort(host, port)
}
