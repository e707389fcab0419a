package kafka

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/porttest"
)

func TestSmoke(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, address string) (net.Listener, error) {
		return net.Listen("tcp", "127.0.0.1:0")
	}))
	require.NoError(t, err)
	defer cluster.Close()
	for _, topic := range []string{DefaultTasksTopic, DefaultResultsTopic} {
		require.NoError(t, cluster.CreateTopic(topic, 2, nil))
	}
	cfg := Config{Brokers: cluster.ListenAddrs(), GroupID: "g"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	producer, err := NewProducer(cfg)
	require.NoError(t, err)
	defer producer.Close()
	sink := NewResultSink(producer, cfg)
	src, err := NewTaskSource(cfg, sink, nil, log)
	require.NoError(t, err)
	defer src.Close()

	value, _ := json.Marshal(TaskMessage{RunID: "r", NodeID: "n", Attempt: 1, Context: map[string]any{"amount": 10}})
	start := time.Now()
	require.NoError(t, producer.send(context.Background(), []record{{topic: DefaultTasksTopic, key: "r", value: value}}))
	t.Logf("produce took %s", time.Since(start))
	intake := porttest.NewIntake(10)
	require.NoError(t, src.Start(context.Background(), intake))
	require.Eventually(t, func() bool { return len(intake.Offers()) == 1 }, 20*time.Second, time.Millisecond)
	t.Logf("offered after %s", time.Since(start))
	offered := intake.Offers()[0]
	require.Equal(t, "r", offered.Task.RunID)
	require.Equal(t, 10.0, offered.Task.Context["amount"])
	require.NoError(t, sink.Deliver(context.Background(), []domain.Result{{RunID: "r", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}}))
	offered.Settle(nil)
	require.NoError(t, src.Stop(context.Background()))
}
