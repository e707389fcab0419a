package service

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/gamelan-go/executor/internal/adapters/memory"
	"github.com/gamelan-go/executor/internal/domain"
)

// memorySet provides the in-process backend, when something uses it.
var memorySet = wire.NewSet(newMemoryBackend)

// newMemoryBackend returns the backend every memory port of this process
// shares, or nil when nothing uses it.
func newMemoryBackend(p *plan, log *slog.Logger) *memory.Backend {
	if !p.uses("memory") {
		return nil
	}
	log.Warn("using the in-memory engine: nothing outside this process can send tasks")
	return memory.NewBackend()
}

// buildMemory serves every type it is given from the in-process engine.
func buildMemory(w *wiring, _ []domain.Registration) (built, func(), error) {
	source := w.memory.TaskSource()
	return built{source: source, sink: w.memory.ResultSink(), endpoint: "memory"}, closingSource(w.log, "memory task source", source), nil
}

// memoryRegistrar registers with the in-process engine.
func memoryRegistrar(w *wiring) (controlPlane, error) {
	return controlPlane{registrar: w.memory.Registrar(), heartbeater: w.memory.Heartbeater()}, nil
}
