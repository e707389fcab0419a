package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
)

// kafkaGroup is the consumer group, and kafkaTaxExecutorID the logical
// executor id, that every process of one service shares (NAME "executor").
const (
	kafkaGroup         = "executor"
	kafkaTaxExecutorID = "executor-calculate-tax"
)

// kafkaEnv is the environment of one executor process serving
// calculate-tax over the Kafka transport of broker, registering over Kafka.
// Processes with the same NAME are replicas: one group, one executor id.
// Each process runs at most capacity tasks at once, queueing as many more,
// so that a process holds only part of the load at any moment.
func kafkaEnv(broker *kafkatest.Broker, instance string) map[string]string {
	return map[string]string{
		"GAMELAN_EXECUTOR_INSTANCE_ID":              instance,
		"GAMELAN_EXECUTOR_HTTP_HOST":                "127.0.0.1",
		"GAMELAN_EXECUTOR_HTTP_PORT":                "0",
		"GAMELAN_EXECUTOR_LOG_LEVEL":                "info",
		"GAMELAN_EXECUTOR_SHUTDOWN_TIMEOUT_SECONDS": "10",
		"GAMELAN_EXECUTOR_TRANSPORT":                "kafka",
		"GAMELAN_EXECUTOR_REGISTRAR":                "kafka",
		"GAMELAN_EXECUTOR_KAFKA_BOOTSTRAP_SERVERS":  strings.Join(broker.Addrs(), ","),
		"GAMELAN_EXECUTOR_ENABLED_TYPES":            "calculate-tax",
		"GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES":      "calculate-tax=kafka",
		"GAMELAN_EXECUTOR_THREAD_POOL_SIZE":         "8",
		"GAMELAN_EXECUTOR_QUEUE_SIZE":               "8",
	}
}

// taxTask is the i-th calculate-tax task of run runID in Gamelan's shape,
// addressed to the shared executor id.
func taxTask(runID string, i int) kafka.TaskMessage {
	node := fmt.Sprintf("tax-%05d", i)
	return kafka.TaskMessage{
		RunID: runID, NodeID: node, Attempt: 1, Token: "token-" + node,
		Context:        map[string]any{"amount": float64(i)*1.25 + 0.37},
		TargetExecutor: kafkaTaxExecutorID,
	}
}

// deadline returns a context that ends after d or with the test.
func deadline(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
