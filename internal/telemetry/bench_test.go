package telemetry_test

import (
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// BenchmarkTaskFinished measures the metrics the runtime records for every
// task, from its workers (two at once on a machine of two cores or more).
func BenchmarkTaskFinished(b *testing.B) {
	m := telemetry.NewMetrics()
	types := []string{"calculate-tax", "order-validator"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.TaskFinished(types[i&1], domain.StatusCompleted, time.Millisecond)
			i++
		}
	})
}

// BenchmarkResultsDelivered measures the metrics recorded for every batch
// of results the engine acknowledges.
func BenchmarkResultsDelivered(b *testing.B) {
	m := telemetry.NewMetrics()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ResultsDelivered("grpc", 10, time.Millisecond)
		}
	})
}
