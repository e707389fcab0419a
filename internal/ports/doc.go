// Package ports declares the interfaces through which the runtime
// (internal/app) talks to the outside world: TaskSource, ResultSink,
// Registrar and Heartbeater, plus Intake, the runtime's side of a TaskSource.
//
// In this project "ports" means these driven, consumer-side interfaces only:
// small, written from the runtime's point of view, each method's comment a
// contract. Inbound servers (the push Execute server, the REST intake) are
// adapters that implement TaskSource; they are not ports of their own.
// Adapters live in internal/adapters/<technology> and every one of them runs
// the contract suite of its port in pkg/porttest.
//
// Beside the interfaces, the package holds the caller side of Intake that
// every source shares, so that each idea is written once: Pull, the pull
// loop of pull sources and its one refusal policy; Gate, the admission of a
// pushed task (authenticate, build, offer, classify); and StopWithin, the
// graceful-then-hard stop of a push source's server.
package ports
