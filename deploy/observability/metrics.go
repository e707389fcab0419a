package observability

import (
	"bufio"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// ExportedMetrics returns the name of every series the service's metrics
// expose: the telemetry.Metrics the service registers, with every vector
// touched so that each has a series, scraped in the text format. A
// histogram's name stands for its _bucket, _sum and _count series, which
// are what queries name. The dashboard's, the alert rules' and the
// Kubernetes autoscalers' tests check the metrics they name against it.
func ExportedMetrics() (map[string]bool, error) {
	m := telemetry.NewMetrics()
	m.ObserveLoad(func() telemetry.Load {
		return telemetry.Load{
			Admitted: 1, Running: map[string]int{"t": 1},
			Types:  map[string]domain.TypeLoad{"t": {Slots: 1, Limit: 1, SlotsInUse: 1, Queued: 1, OldestQueued: time.Second, Registered: true}},
			Outbox: map[string]int{"kafka": 1},
		}
	})
	m.ObserveConsumerLag(func() []telemetry.PartitionLag {
		return []telemetry.PartitionLag{{Topic: "tasks", Partition: 0, Lag: 1}}
	})
	m.ObserveKafkaDeadLetters(func() []telemetry.DeadLetters {
		return []telemetry.DeadLetters{{Reason: "unaddressable", Written: 1, Failed: 1}}
	})
	m.TaskFinished("t", domain.StatusCompleted, time.Millisecond)
	m.TaskRefused("kafka", "overloaded")
	m.ResultsDelivered("kafka", 1, time.Millisecond)
	m.DeliveryRetried("kafka")
	m.ResultsUndelivered("kafka", 1)
	m.ResultDeadLettered("kafka")
	m.HandlerAbandoned("t")
	m.HeartbeatFailed("t")
	m.RegistrationFailed("t")

	scrape := httptest.NewRecorder()
	m.Handler().ServeHTTP(scrape, httptest.NewRequest("GET", "/q/metrics", nil))
	if scrape.Code != 200 {
		return nil, fmt.Errorf("scrape answered %d", scrape.Code)
	}
	return typedNames(scrape.Body)
}

// typedNames reads the "# TYPE <name> <kind>" lines of a text-format scrape.
func typedNames(r io.Reader) (map[string]bool, error) {
	exported := make(map[string]bool)
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) != 4 || fields[0] != "#" || fields[1] != "TYPE" {
			continue
		}
		name, kind := fields[2], fields[3]
		exported[name] = true
		switch kind {
		case "histogram":
			exported[name+"_bucket"], exported[name+"_sum"], exported[name+"_count"] = true, true, true
		case "summary":
			exported[name+"_sum"], exported[name+"_count"] = true, true
		}
	}
	return exported, scanner.Err()
}
