package kafkatest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// testContext returns a context that ends with the test or after a
// generous bound, whichever comes first.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// ping reports whether a fresh client with opts can talk to a broker.
func ping(t *testing.T, opts ...kgo.Opt) error {
	t.Helper()
	client, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer client.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return client.Ping(ctx)
}

func TestListensOnLoopbackOnly(t *testing.T) {
	t.Parallel()
	b := Start(t, WithBrokers(3))
	require.Len(t, b.Addrs(), 3)
	for _, addr := range b.Addrs() {
		host, _, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		assert.Equal(t, "127.0.0.1", host)
	}
	for _, addr := range b.Cluster().ListenAddrs() {
		host, _, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		assert.Equal(t, "127.0.0.1", host)
	}
}

func TestProduceAndReadRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t, WithBrokers(3))
	reader := b.NewReader(t, TasksTopic)
	tasks := b.Tasks(t)

	require.NoError(t, b.Produce(ctx, TasksTopic, "run-1", []byte(`{"runId":"run-1","nodeId":"n","attempt":1}`),
		map[string]string{kafka.AuthorizationHeader: "Bearer abc", "trace": "t-1"}))
	task := kafka.TaskMessage{RunID: "run-2", NodeID: "node-a", Attempt: 2, Context: map[string]any{"amount": 3.5}}
	require.NoError(t, b.ProduceTask(ctx, task))
	require.NoError(t, b.Produce(ctx, TasksTopic, "", []byte(`{"runId":"run-3","nodeId":"n","attempt":1}`), nil))

	require.NoError(t, reader.WaitFor(ctx, 3))
	records := reader.Records()
	require.Len(t, records, 3)
	byValue := make(map[string]Record)
	for _, r := range records {
		assert.Equal(t, TasksTopic, r.Topic)
		assert.GreaterOrEqual(t, r.Partition, int32(0))
		assert.Less(t, r.Partition, int32(DefaultPartitions))
		assert.False(t, r.Timestamp.IsZero())
		byValue[string(r.Value)] = r
	}
	first := byValue[`{"runId":"run-1","nodeId":"n","attempt":1}`]
	assert.Equal(t, []byte("run-1"), first.Key)
	assert.Equal(t, map[string]string{kafka.AuthorizationHeader: "Bearer abc", "trace": "t-1"}, first.Headers)
	third := byValue[`{"runId":"run-3","nodeId":"n","attempt":1}`]
	assert.Nil(t, third.Key, "an empty key is a null key")
	assert.Nil(t, third.Headers)

	require.NoError(t, tasks.WaitForMessages(ctx, 3))
	assert.Contains(t, tasks.Messages(), task)
	assert.Empty(t, tasks.Malformed())

	// Malformed input: any bytes, null key and value, repeated headers.
	require.NoError(t, b.ProduceRaw(ctx, TasksTopic, []byte{0xff, 0x00}, []byte("{not json"),
		Header{Key: "h", Value: []byte{0xfe}}, Header{Key: "h", Value: []byte("second")}))
	require.NoError(t, b.ProduceRaw(ctx, TasksTopic, nil, nil))
	require.NoError(t, reader.WaitFor(ctx, 5))
	err := tasks.WaitForMessages(ctx, 10)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "does not decode")
	require.NoError(t, tasks.WaitUntil(ctx, func(records []Record) bool { return len(records) == 5 }))
	malformed := tasks.Malformed()
	require.Len(t, malformed, 2)
	for _, r := range malformed {
		if r.Value == nil {
			assert.Nil(t, r.Key)
			continue
		}
		assert.Equal(t, []byte{0xff, 0x00}, r.Key)
		assert.Equal(t, "second", r.Headers["h"], "the last of repeated headers wins")
	}
	assert.Len(t, tasks.Messages(), 3)
}

func TestWaitForFailsWithContext(t *testing.T) {
	t.Parallel()
	b := Start(t)
	reader := b.NewReader(t, ResultsTopic)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := reader.WaitFor(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	reader.Close()
	err = reader.WaitFor(t.Context(), 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "closed")
}

func TestKeyedRecordsOfOneRunShareAPartition(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t)
	reader := b.NewReader(t, TasksTopic)
	for attempt := range 5 {
		require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "run-1", NodeID: "n", Attempt: attempt}))
	}
	require.NoError(t, reader.WaitFor(ctx, 5))
	records := reader.Records()
	for i, r := range records {
		assert.Equal(t, records[0].Partition, r.Partition)
		assert.Equal(t, int64(i), r.Offset)
	}
}

func TestTopicsAndPartitions(t *testing.T) {
	t.Parallel()

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		b := Start(t)
		assert.Equal(t, []string{"workflow.tasks", "workflow-results", "executor-registrations", "executor-heartbeats", "executor-unregistrations", "workflow.tasks.dlt"}, b.Topics())
		for _, topic := range b.Topics() {
			assert.Len(t, b.Cluster().PartitionInfos(topic), DefaultPartitions, topic)
		}
	})

	t.Run("configured", func(t *testing.T) {
		t.Parallel()
		b := Start(t, WithPartitions(3), WithTopics("tasks-a", "results-a"))
		assert.Len(t, b.Cluster().PartitionInfos("tasks-a"), 3)
		assert.Len(t, b.Cluster().PartitionInfos("results-a"), 3)
		assert.Nil(t, b.Cluster().TopicInfo(TasksTopic), "the defaults are replaced")
	})

	t.Run("no auto-creation", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		b := Start(t)
		err := b.Produce(ctx, "no-such-topic", "k", []byte("v"), nil)
		require.ErrorIs(t, err, kerr.UnknownTopicOrPartition)

		// A metadata request asking for auto-creation, as sarama sends by
		// default, creates nothing either.
		client, err := kgo.NewClient(b.ClientOptions()...)
		require.NoError(t, err)
		defer client.Close()
		req := kmsg.NewPtrMetadataRequest()
		req.AllowAutoTopicCreation = true
		topic := kmsg.NewMetadataRequestTopic()
		topic.Topic = kmsg.StringPtr("asked-for")
		req.Topics = append(req.Topics, topic)
		resp, err := req.RequestWith(ctx, client)
		require.NoError(t, err)
		require.Len(t, resp.Topics, 1)
		assert.Equal(t, kerr.UnknownTopicOrPartition.Code, resp.Topics[0].ErrorCode)
		assert.Nil(t, b.Cluster().TopicInfo("asked-for"))
	})
}

func TestTypedReaders(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t)
	results := b.Results(t)
	registrations := b.Registrations(t)
	heartbeats := b.Heartbeats(t)
	unregistrations := b.Unregistrations(t)

	completedAt := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	first := kafka.ResultMessage{RunID: "run-1", NodeID: "n1", Attempt: 1, Status: "COMPLETED",
		Output: map[string]any{"ok": true}, ExecutionToken: "tok", CompletedAt: completedAt}
	duplicate := first
	duplicate.Status = "FAILED"
	duplicate.Error = &kafka.ResultError{Code: "X", Message: "late duplicate"}
	retry := first
	retry.Attempt = 2
	for _, m := range []kafka.ResultMessage{first, duplicate, retry} {
		require.NoError(t, b.ProduceJSON(ctx, ResultsTopic, m.RunID, m, nil))
	}
	require.NoError(t, results.WaitForUnique(ctx, 2))
	require.NoError(t, results.WaitForMessages(ctx, 3))
	assert.Len(t, results.All(), 3)
	assert.Equal(t, 1, results.Duplicates())
	assert.Equal(t, []string{"run-1:n1:1"}, results.DuplicatedKeys())
	unique := results.UniqueResults()
	require.Len(t, unique, 2)
	assert.Equal(t, first, unique["run-1:n1:1"], "the first result wins")
	assert.Equal(t, retry, unique["run-1:n1:2"])

	registration := kafka.RegistrationMessage{ExecutorID: "ex-1", ExecutorType: "payments", SupportedTypes: []string{"pay"},
		MaxConcurrentTasks: 4, Endpoint: "kafka", Metadata: map[string]string{"v": "1"}, Timestamp: completedAt}
	heartbeat := kafka.HeartbeatMessage{ExecutorID: "ex-1", CurrentTaskCount: 2,
		Health: kafka.HeartbeatHealth{Status: "UP", CurrentTasks: 2, CompletedTasks: 7}, Timestamp: completedAt}
	unregistration := kafka.UnregistrationMessage{ExecutorID: "ex-1", Timestamp: completedAt}
	require.NoError(t, b.ProduceJSON(ctx, RegistrationsTopic, "ex-1", registration, nil))
	require.NoError(t, b.ProduceJSON(ctx, HeartbeatsTopic, "ex-1", heartbeat, nil))
	require.NoError(t, b.ProduceJSON(ctx, UnregistrationsTopic, "ex-1", unregistration, nil))
	require.NoError(t, registrations.WaitForMessages(ctx, 1))
	require.NoError(t, heartbeats.WaitForMessages(ctx, 1))
	require.NoError(t, unregistrations.WaitForMessages(ctx, 1))
	assert.Equal(t, []kafka.RegistrationMessage{registration}, registrations.Messages())
	assert.Equal(t, []kafka.HeartbeatMessage{heartbeat}, heartbeats.Messages())
	assert.Equal(t, []kafka.UnregistrationMessage{unregistration}, unregistrations.Messages())
	assert.Equal(t, []byte("ex-1"), registrations.Records()[0].Key)
}

// TestBulkProducerAndCatchUp: the bulk producer's tasks are acknowledged,
// with their partitions remembered, and a reader that caught up has read
// every one of them.
func TestBulkProducerAndCatchUp(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t)
	producer := b.BulkProducer(t)
	const n = 50
	for i := range n {
		producer.Produce(ctx, kafka.TaskMessage{RunID: fmt.Sprint("run-", i%5), NodeID: fmt.Sprint("n", i), Attempt: 1})
	}
	require.NoError(t, producer.Flush(ctx))
	assert.Equal(t, n, producer.Acknowledged())
	first, ok := producer.Partition(TaskKey(kafka.TaskMessage{RunID: "run-0", NodeID: "n0", Attempt: 1}))
	require.True(t, ok)
	same, _ := producer.Partition(TaskKey(kafka.TaskMessage{RunID: "run-0", NodeID: "n5", Attempt: 1}))
	assert.Equal(t, first, same, "tasks of one run share a partition")
	_, ok = producer.Partition("run-0:unknown:1")
	assert.False(t, ok)

	tasks := b.Tasks(t)
	require.NoError(t, tasks.CatchUp(ctx))
	assert.Len(t, tasks.Messages(), n)
	// franz-go compresses a batch only when that makes it smaller, and how
	// records batch depends on timing: a record alone may go uncompressed.
	for _, rec := range tasks.Records() {
		assert.Contains(t, []string{"snappy", "none"}, rec.Compression)
	}
	big := kafka.TaskMessage{RunID: "run-big", NodeID: "n", Attempt: 1, Context: map[string]any{"text": strings.Repeat("compressible ", 200)}}
	producer.Produce(ctx, big)
	require.NoError(t, producer.Flush(ctx))
	require.NoError(t, tasks.CatchUp(ctx))
	records := tasks.Records()
	require.Len(t, records, n+1)
	i := slices.IndexFunc(records, func(r Record) bool { return string(r.Key) == "run-big" })
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, "snappy", records[i].Compression, "a record that snappy shrinks is sent compressed")
}

// consumeAndCommit joins group on topic with a franz-go consumer, consumes
// n records, commits them, and leaves the group.
func consumeAndCommit(t *testing.T, b *Broker, group, topic string, n int) {
	t.Helper()
	ctx := testContext(t)
	opts := append(b.ClientOptions(),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(50*time.Millisecond),
	)
	consumer, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	defer consumer.Close()
	require.NoError(t, b.WaitGroupStable(ctx, group, 1))
	members, err := b.GroupMembers(group)
	require.NoError(t, err)
	assert.Equal(t, 1, members)

	var consumed []*kgo.Record
	for len(consumed) < n {
		fetches := consumer.PollFetches(ctx)
		require.NoError(t, ctx.Err())
		fetches.EachRecord(func(r *kgo.Record) { consumed = append(consumed, r) })
	}
	require.Len(t, consumed, n)
	require.NoError(t, consumer.CommitRecords(ctx, consumed...))
}

func TestCommittedOffsetsAndLag(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t)
	const group = "executors"

	committed, err := b.CommittedOffsets(group, TasksTopic)
	require.NoError(t, err)
	assert.Empty(t, committed)
	_, err = b.CommittedOffsets(group, "no-such-topic")
	require.Error(t, err)

	for i := range 8 {
		require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "run-" + string(rune('a'+i)), NodeID: "n", Attempt: 1}))
	}
	lag, err := b.Lag(group, TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, int64(8), lag, "a group that committed nothing lags by everything")

	consumeAndCommit(t, b, group, TasksTopic, 8)
	committed, err = b.CommittedOffsets(group, TasksTopic)
	require.NoError(t, err)
	var total int64
	for partition, offset := range committed {
		assert.Equal(t, b.Cluster().PartitionInfo(TasksTopic, partition).HighWatermark, offset)
		total += offset
	}
	assert.Equal(t, int64(8), total)
	require.NoError(t, b.WaitForLag(ctx, group, TasksTopic, 0))

	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "run-z", NodeID: "n", Attempt: 1}))
	lag, err = b.Lag(group, TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, int64(1), lag)

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = b.WaitForLag(short, group, TasksTopic, 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "last 1")
}

func TestRestartKeepsRecordsAndCommittedOffsets(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t, WithPersistence(), WithPartitions(2))
	addrs := b.Addrs()
	const group = "executors"
	live := b.NewReader(t, TasksTopic)

	for i := range 6 {
		require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "run-" + string(rune('a'+i)), NodeID: "n", Attempt: 1}))
	}
	consumeAndCommit(t, b, group, TasksTopic, 6)
	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "run-late", NodeID: "n", Attempt: 1}))
	committedBefore, err := b.CommittedOffsets(group, TasksTopic)
	require.NoError(t, err)
	require.NotEmpty(t, committedBefore)
	require.NoError(t, live.WaitFor(ctx, 7))

	b.Restart(t)

	assert.Equal(t, addrs, b.Addrs())
	assert.Equal(t, addrs, b.Cluster().ListenAddrs(), "the same ports")
	assert.Len(t, b.Cluster().PartitionInfos(TasksTopic), 2)
	committedAfter, err := b.CommittedOffsets(group, TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, committedBefore, committedAfter)
	lag, err := b.Lag(group, TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, int64(1), lag)

	fresh := b.NewReader(t, TasksTopic)
	require.NoError(t, fresh.WaitFor(ctx, 7))

	// The cached producer and the live reader reconnect by themselves.
	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "run-after", NodeID: "n", Attempt: 1}))
	require.NoError(t, live.WaitFor(ctx, 8))
	require.NoError(t, fresh.WaitFor(ctx, 8))
	assert.Len(t, live.Records(), 8, "no record read twice")

	// A group consumer resumes from the committed offsets.
	consumeAndCommit(t, b, group, TasksTopic, 2)
	require.NoError(t, b.WaitForLag(ctx, group, TasksTopic, 0))
}

func TestRestartAfterKeepsBrokersDownMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := Start(t, WithPersistence())
	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 1}))
	var downErr error
	b.RestartAfter(t, func() { downErr = ping(t, b.ClientOptions()...) })
	require.Error(t, downErr, "a broker answered while down")
	require.NoError(t, ping(t, b.ClientOptions()...))
	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 2}))
	require.NoError(t, b.Tasks(t).WaitForMessages(ctx, 2))
}

func TestRestartKeepsSecuritySettings(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	certs := securitytest.GenerateCertificates(t)
	server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
	require.NoError(t, err)
	client, err := security.ClientTLSConfig(certs.CAFile, "", "")
	require.NoError(t, err)
	b := Start(t, WithPersistence(), WithTLS(server, client), WithSASL(SASLScramSHA256, "engine", "s3cret"))
	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 1}))
	b.Restart(t)
	require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 2}))
	require.NoError(t, b.Tasks(t).WaitForMessages(ctx, 2))
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	t.Parallel()
	b := Start(t)
	require.NoError(t, b.ProduceTask(t.Context(), kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 1}))
	b.Close()
	b.Close()
	assert.Nil(t, b.Cluster())
	require.Error(t, b.ProduceTask(t.Context(), kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 2}))
	_, err := b.CommittedOffsets("g", TasksTopic)
	require.Error(t, err)
	_, err = b.Lag("g", TasksTopic)
	require.Error(t, err)
	require.Error(t, ping(t, b.ClientOptions()...))
}

func TestSASL(t *testing.T) {
	t.Parallel()
	for _, mechanism := range []string{SASLPlain, SASLScramSHA256, SASLScramSHA512} {
		t.Run(mechanism, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			b := Start(t, WithSASL(mechanism, "engine", "s3cret"))
			reader := b.NewReader(t, TasksTopic)
			require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 1}))
			require.NoError(t, reader.WaitFor(ctx, 1))

			require.NoError(t, ping(t, b.ClientOptions()...))
			wrong := plain.Auth{User: "engine", Pass: "wrong"}.AsMechanism()
			switch mechanism {
			case SASLScramSHA256:
				wrong = scram.Auth{User: "engine", Pass: "wrong"}.AsSha256Mechanism()
			case SASLScramSHA512:
				wrong = scram.Auth{User: "engine", Pass: "wrong"}.AsSha512Mechanism()
			}
			// kfake drops the connection on bad credentials instead of
			// answering SASL_AUTHENTICATION_FAILED as Kafka does, so the
			// client sees EOF: only the failure itself is checked.
			require.Error(t, ping(t, kgo.SeedBrokers(b.Addrs()...), kgo.SASL(wrong)), "a wrong password")
			unknown := plain.Auth{User: "nobody", Pass: "s3cret"}.AsMechanism()
			require.Error(t, ping(t, kgo.SeedBrokers(b.Addrs()...), kgo.SASL(unknown)), "an unknown user")
			require.Error(t, ping(t, kgo.SeedBrokers(b.Addrs()...)), "no SASL at all")
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	certs := securitytest.GenerateCertificates(t)

	t.Run("server", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
		require.NoError(t, err)
		client, err := security.ClientTLSConfig(certs.CAFile, "", "")
		require.NoError(t, err)
		b := Start(t, WithTLS(server, client))
		reader := b.NewReader(t, TasksTopic)
		require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 1}))
		require.NoError(t, reader.WaitFor(ctx, 1))

		untrusting, err := security.ClientTLSConfig(certs.OtherCAFile, "", "")
		require.NoError(t, err)
		require.Error(t, ping(t, kgo.SeedBrokers(b.Addrs()...), kgo.DialTLSConfig(untrusting)), "a client trusting another CA")
		require.Error(t, ping(t, kgo.SeedBrokers(b.Addrs()...)), "a plaintext client")
	})

	t.Run("mutual", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile)
		require.NoError(t, err)
		client, err := security.ClientTLSConfig(certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)
		require.NoError(t, err)
		b := Start(t, WithTLS(server, client))
		require.NoError(t, b.ProduceTask(ctx, kafka.TaskMessage{RunID: "r", NodeID: "n", Attempt: 1}))

		anonymous, err := security.ClientTLSConfig(certs.CAFile, "", "")
		require.NoError(t, err)
		require.Error(t, ping(t, kgo.SeedBrokers(b.Addrs()...), kgo.DialTLSConfig(anonymous)), "a client without a certificate")
	})
}

func TestCompression(t *testing.T) {
	t.Parallel()
	compressible := []byte(`{"runId":"r","nodeId":"n","attempt":1,"context":{"note":"` + strings.Repeat("abcd", 256) + `"}}`)
	for name, codec := range map[string]kgo.CompressionCodec{
		"snappy": kgo.SnappyCompression(),
		"gzip":   kgo.GzipCompression(),
		"lz4":    kgo.Lz4Compression(),
		"zstd":   kgo.ZstdCompression(),
		"none":   kgo.NoCompression(),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			b := Start(t, WithCompression(codec))
			reader := b.NewReader(t, TasksTopic)
			require.NoError(t, b.Produce(ctx, TasksTopic, "r", compressible, nil))
			require.NoError(t, reader.WaitFor(ctx, 1))
			record := reader.Records()[0]
			assert.Equal(t, name, record.Compression)
			assert.Equal(t, compressible, record.Value)
		})
	}

	t.Run("default is snappy", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		b := Start(t)
		reader := b.NewReader(t, TasksTopic)
		require.NoError(t, b.Produce(ctx, TasksTopic, "r", compressible, nil))
		require.NoError(t, reader.WaitFor(ctx, 1))
		assert.Equal(t, "snappy", reader.Records()[0].Compression)
	})
}

func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string][]Option{
		"no partitions":  {WithPartitions(0)},
		"no brokers":     {WithBrokers(0)},
		"empty topic":    {WithTopics("ok", "")},
		"bad mechanism":  {WithSASL("GSSAPI", "u", "p")},
		"no SASL user":   {WithSASL(SASLPlain, "", "p")},
		"no client TLS":  {WithTLS(&tls.Config{}, nil)},
		"no server TLS ": {WithTLS(nil, &tls.Config{})},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := settings{broker: kafkaengine.BrokerConfig{Partitions: DefaultPartitions, Brokers: 1, Topics: DefaultTopics()}}
			for _, opt := range opts {
				opt(&s)
			}
			require.Error(t, s.validate())
		})
	}
}
