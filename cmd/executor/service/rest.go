package service

import (
	"log/slog"
	"net"
	"strconv"

	"github.com/google/wire"

	"github.com/gamelan-go/executor/internal/adapters/rest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
)

// restSet provides the client of the engine's REST registry.
var restSet = wire.NewSet(newRegistryClient)

// newRegistryClient returns the client of the engine's REST registry when
// it is the control plane, else nil.
func newRegistryClient(s *settings, p *plan, tokens *security.Minter) (*rest.Client, error) {
	if p.registrar != "rest" {
		return nil, nil
	}
	cfg := rest.ClientConfig{BaseURL: string(s.REST.EngineURL), Timeout: s.REST.EngineTimeout.Duration()}
	if tokens != nil {
		cfg.Token = tokens.Token
	}
	return rest.NewClient(cfg)
}

// buildREST serves types through the REST intake the engine posts tasks
// to; their results go where REST_RESULT_SINK says.
func buildREST(w *wiring, served []domain.Registration) (built, func(), error) {
	r := w.settings.REST
	intake, err := rest.NewIntake(rest.IntakeConfig{
		Address:      net.JoinHostPort(string(r.Host), strconv.Itoa(int(r.Port))),
		MaxBodyBytes: int64(r.MaxBodyBytes),
		Authenticate: w.inbound,
		Executors:    served,
	}, w.log.With(slog.String("component", "rest-intake")))
	if err != nil {
		return built{}, nil, err
	}
	var sink ports.ResultSink
	if r.ResultSink == "kafka" {
		sink = kafkaResults(w)
	} else {
		sink = grpcReportResults(w)
	}
	endpoint := string(r.AdvertisedEndpoint)
	if endpoint == "" {
		endpoint = "http://" + advertisedAddress(intake.Addr()) + rest.TaskPath
	}
	return built{source: intake, sink: sink, endpoint: endpoint}, closingSource(w.log, "rest intake", intake), nil
}

// restRegistrar registers with the engine's REST registry.
func restRegistrar(w *wiring) (controlPlane, error) {
	return controlPlane{
		registrar:   rest.NewRegistrar(w.registry, w.settings.TaskTimeout.Duration()),
		heartbeater: rest.NewHeartbeater(w.registry),
	}, nil
}
