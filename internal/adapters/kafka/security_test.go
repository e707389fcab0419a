package kafka_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/adapters/kafka/kafkatest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// requireRoundTrip shows that the adapters reach b with cfg: a result
// produced through a ResultSink is read back, and a task produced by the
// engine side is offered by a TaskSource and committed once settled.
func requireRoundTrip(t *testing.T, b *kafkatest.Broker, cfg kafka.Config) {
	t.Helper()
	results := b.Results(t)
	sink := kafka.NewResultSink(newProducer(t, cfg), cfg)
	result := domain.Result{RunID: "secured", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted, ExecutorID: taxExecutorID}
	require.NoError(t, sink.Deliver(waitContext(t), []domain.Result{result}), "Deliver")
	require.NoError(t, results.WaitForMessages(waitContext(t), 1))
	assert.Equal(t, "secured", results.All()[0].RunID)

	source := newSource(t, cfg, newLogBook(t))
	in := startSource(t, source, 4)
	produceTask(t, b, task("secured-task"))
	waitOffered(t, in, "secured-task")["secured-task"].Settle(nil)
	waitLag(t, b, cfg.GroupID, 0)
}

// requireUnreachable shows that the adapters cannot reach b with cfg: a
// send fails, and a TaskSource reports itself unhealthy because it cannot
// connect, and offers nothing of the task waiting for it.
func requireUnreachable(t *testing.T, b *kafkatest.Broker, cfg kafka.Config) {
	t.Helper()
	sink := kafka.NewResultSink(newProducer(t, cfg), cfg)
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	err := sink.Deliver(ctx, []domain.Result{{RunID: "r", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted}})
	require.Error(t, err, "Deliver")
	require.NoError(t, ctx.Err(), "Deliver failed only when its context ended: %v", err)

	produceTask(t, b, task("waiting"))
	source := newSource(t, cfg, newLogBook(t))
	in := startSource(t, source, 4)
	require.Eventually(t, func() bool {
		err := source.Healthy()
		return err != nil && strings.Contains(err.Error(), "connect to")
	}, waitTimeout, 5*time.Millisecond, "the source never reported its failure to connect (last: %v)", source.Healthy())
	assert.Zero(t, in.Attempts(), "offers from a source that cannot connect")
	lag, err := b.Lag(cfg.GroupID, kafkatest.TasksTopic)
	require.NoError(t, err)
	assert.Equal(t, int64(1), lag)
}

func TestSASL(t *testing.T) {
	t.Parallel()
	for _, mechanism := range []string{kafkatest.SASLPlain, kafkatest.SASLScramSHA256, kafkatest.SASLScramSHA512} {
		t.Run(mechanism, func(t *testing.T) {
			t.Parallel()
			b := kafkatest.Start(t, kafkatest.WithSASL(mechanism, "executor", "s3cret"))
			cfg := brokerConfig(b, porttest.UniqueID(t))
			cfg.SASL = kafka.SASL{Mechanism: mechanism, User: "executor", Password: "s3cret"}
			requireRoundTrip(t, b, cfg)
		})
		if mechanism == kafkatest.SASLScramSHA512 {
			continue // one wrong password per family is enough
		}
		t.Run(mechanism+"/wrong password", func(t *testing.T) {
			t.Parallel()
			b := kafkatest.Start(t, kafkatest.WithSASL(mechanism, "executor", "s3cret"))
			cfg := brokerConfig(b, porttest.UniqueID(t))
			cfg.SASL = kafka.SASL{Mechanism: mechanism, User: "executor", Password: "wrong"}
			requireUnreachable(t, b, cfg)
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	certs := securitytest.GenerateCertificates(t)
	clientTLS := func(t *testing.T, ca, cert, key string) *tls.Config {
		t.Helper()
		config, err := security.ClientTLSConfig(ca, cert, key)
		require.NoError(t, err)
		return config
	}

	t.Run("server", func(t *testing.T) {
		t.Parallel()
		server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
		require.NoError(t, err)
		b := kafkatest.Start(t, kafkatest.WithTLS(server, clientTLS(t, certs.CAFile, "", "")))
		cfg := brokerConfig(b, porttest.UniqueID(t))
		cfg.TLS = clientTLS(t, certs.CAFile, "", "")
		requireRoundTrip(t, b, cfg)
	})

	t.Run("mutual", func(t *testing.T) {
		t.Parallel()
		server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, certs.CAFile)
		require.NoError(t, err)
		b := kafkatest.Start(t, kafkatest.WithTLS(server, clientTLS(t, certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)))
		cfg := brokerConfig(b, porttest.UniqueID(t))
		cfg.TLS = clientTLS(t, certs.CAFile, certs.ClientCertFile, certs.ClientKeyFile)
		requireRoundTrip(t, b, cfg)
	})

	t.Run("untrusted server", func(t *testing.T) {
		t.Parallel()
		server, err := security.ServerTLSConfig(certs.ServerCertFile, certs.ServerKeyFile, "")
		require.NoError(t, err)
		b := kafkatest.Start(t, kafkatest.WithTLS(server, clientTLS(t, certs.CAFile, "", "")))
		cfg := brokerConfig(b, porttest.UniqueID(t))
		cfg.TLS = clientTLS(t, certs.OtherCAFile, "", "")
		requireUnreachable(t, b, cfg)
	})
}

// TestTokens: a Producer WithTokens puts "authorization: Bearer <JWT>" on
// every record it produces, results, registrations, heartbeats and
// unregistrations alike, and the token speaks for the record's executor id.
func TestTokens(t *testing.T) {
	t.Parallel()
	secret := securitytest.Secret(t)
	minter, err := security.NewMinter(security.MinterConfig{
		Secret: secret, Issuer: "tax-service", Audience: "gamelan-engine", TTL: 5 * time.Minute,
		Subject: "tax-service-default", ExecutorTypes: []string{"calculate-tax"},
	})
	require.NoError(t, err)
	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: secret, Issuer: "tax-service", Audience: "gamelan-engine"})
	require.NoError(t, err)

	b := kafkatest.Start(t)
	cfg := brokerConfig(b, "")
	producer := newProducer(t, cfg)
	producer.WithTokens(minter.Token)
	readers := map[string]*kafkatest.Reader{}
	for _, topic := range []string{kafkatest.ResultsTopic, kafkatest.RegistrationsTopic, kafkatest.HeartbeatsTopic, kafkatest.UnregistrationsTopic} {
		readers[topic] = b.NewReader(t, topic)
	}

	ctx := waitContext(t)
	sink := kafka.NewResultSink(producer, cfg)
	require.NoError(t, sink.Deliver(ctx, []domain.Result{
		{RunID: "r-1", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted, ExecutorID: "tax-exec-a"},
		{RunID: "r-2", NodeID: "n", Attempt: 1, Status: domain.StatusCompleted, ExecutorID: "tax-exec-b"},
	}))
	registrar := kafka.NewRegistrar(producer, cfg)
	require.NoError(t, registrar.Register(ctx, domain.Registration{ExecutorID: "tax-exec-a", Descriptor: domain.Descriptor{Type: "calculate-tax"}}))
	require.NoError(t, kafka.NewHeartbeater(producer, cfg).Heartbeat(ctx, domain.Heartbeat{ExecutorID: "tax-exec-a", Status: domain.HealthHealthy}))
	require.NoError(t, registrar.Unregister(ctx, "tax-exec-b"))

	want := map[string]int{kafkatest.ResultsTopic: 2, kafkatest.RegistrationsTopic: 1, kafkatest.HeartbeatsTopic: 1, kafkatest.UnregistrationsTopic: 1}
	for topic, n := range want {
		reader := readers[topic]
		require.NoError(t, reader.WaitFor(ctx, n), "records on %s", topic)
		for _, record := range reader.Records() {
			// Registrations, heartbeats and unregistrations are keyed by
			// executor id; results by run id.
			subject := string(record.Key)
			if topic == kafkatest.ResultsTopic {
				subject = map[string]string{"r-1": "tax-exec-a", "r-2": "tax-exec-b"}[string(record.Key)]
			}
			token, err := security.BearerToken(record.Headers[kafka.AuthorizationHeader])
			require.NoError(t, err, "record on %s for %s", topic, subject)
			claims, err := verifier.Verify(token)
			require.NoError(t, err, "token on %s for %s", topic, subject)
			assert.Equal(t, subject, claims.Subject, "sub of the token on %s", topic)
			assert.Equal(t, []string{"calculate-tax"}, claims.ExecutorTypes)
		}
	}
}

// TestCompression: tasks the engine produces compressed, snappy as
// Gamelan does or any other codec Kafka knows, are decoded and offered
// intact.
func TestCompression(t *testing.T) {
	t.Parallel()
	codecs := map[string][]kafkatest.Option{
		"snappy": nil, // kafkatest's default, as Gamelan's
		"gzip":   {kafkatest.WithCompression(kgo.GzipCompression())},
		"lz4":    {kafkatest.WithCompression(kgo.Lz4Compression())},
		"zstd":   {kafkatest.WithCompression(kgo.ZstdCompression())},
	}
	for name, opts := range codecs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := kafkatest.Start(t, opts...)
			tasks := b.Tasks(t)
			source := newSource(t, brokerConfig(b, porttest.UniqueID(t)), newLogBook(t))
			in := startSource(t, source, 4)
			msg := task("compressed")
			note := strings.Repeat("taxable ", 512) // compressible, so that the codec is used
			msg.Context["note"] = note
			produceTask(t, b, msg)
			require.NoError(t, tasks.WaitFor(waitContext(t), 1))
			require.Equal(t, name, tasks.Records()[0].Compression, "codec of the produced batch")

			got := waitOffered(t, in, "compressed")["compressed"].Task
			assert.Equal(t, note, got.Context["note"])
			assert.Equal(t, 100.5, got.Context["amount"])
		})
	}
}
