package kafkatest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
)

// The default topic names of docs/protocol.md, section 4, which Start creates
// unless WithTopics names others, and which the typed helpers (ProduceTask,
// Results, Registrations, ...) use.
const (
	TasksTopic           = kafkaengine.TasksTopic
	ResultsTopic         = kafkaengine.ResultsTopic
	RegistrationsTopic   = kafkaengine.RegistrationsTopic
	HeartbeatsTopic      = kafkaengine.HeartbeatsTopic
	UnregistrationsTopic = kafkaengine.UnregistrationsTopic
	// DeadLetterTopic is the executor's default dead-letter topic, which
	// Start creates too unless WithTopics names others.
	DeadLetterTopic = kafkaengine.DeadLetterTopic
)

// The SASL mechanisms WithSASL accepts, spelled as Kafka (and sarama's
// SASLType constants) spell them.
const (
	SASLPlain       = kafkaengine.SASLPlain
	SASLScramSHA256 = kafkaengine.SASLScramSHA256
	SASLScramSHA512 = kafkaengine.SASLScramSHA512
)

// DefaultPartitions is the number of partitions of every topic Start creates
// unless WithPartitions says otherwise. It is more than one so that
// ordering and group assignment across partitions are exercised.
const DefaultPartitions = 4

// DefaultTopics returns the five default topic names of docs/protocol.md,
// section 4, tasks first.
func DefaultTopics() []string { return kafkaengine.DefaultTopics() }

// inspectInterval is how often WaitForLag and WaitGroupStable look at the
// cluster's state, which kfake does not announce.
const inspectInterval = 10 * time.Millisecond

// Option configures a Broker at Start.
type Option func(*settings)

// settings is what the options set; it does not change after Start.
type settings struct {
	broker      kafkaengine.BrokerConfig
	persistent  bool
	tls         bool // WithTLS was given
	compression []kgo.CompressionCodec
}

// WithPartitions sets the number of partitions of every topic Start creates
// (DefaultPartitions if not given). It must be at least 1.
func WithPartitions(n int) Option {
	return func(s *settings) { s.broker.Partitions = n }
}

// WithBrokers sets the number of brokers of the cluster (1 if not given),
// each on its own port of 127.0.0.1. Partition leadership is spread over
// them, so that clients must follow leaders (see Cluster for moving them).
// It must be at least 1.
func WithBrokers(n int) Option {
	return func(s *settings) { s.broker.Brokers = n }
}

// WithTopics replaces the topics Start creates (DefaultTopics and
// DeadLetterTopic if not given) by names. Typed helpers such as
// ProduceTask and Results keep using the default names; use ProduceJSON,
// NewMessageReader and ResultsFrom for others.
func WithTopics(names ...string) Option {
	return func(s *settings) { s.broker.Topics = slices.Clone(names) }
}

// WithPersistence keeps the cluster's state (topics, records, groups,
// committed offsets, producer ids) in a directory of t.TempDir(), so that
// Restart brings it back. Without it Restart fails the test.
func WithPersistence() Option {
	return func(s *settings) { s.persistent = true }
}

// WithSASL makes every broker require SASL authentication with mechanism
// (SASLPlain, SASLScramSHA256 or SASLScramSHA512) and the one user and
// password given, a superuser. The harness's own clients authenticate as
// that user. Start fails the test on another mechanism.
func WithSASL(mechanism, user, password string) Option {
	return func(s *settings) {
		s.broker.SASL = &kafkaengine.SASL{Mechanism: mechanism, User: user, Password: password}
	}
}

// WithTLS makes every broker serve TLS with server, which should hold a
// certificate for 127.0.0.1 and may require client certificates (mutual
// TLS). The harness's own clients dial with client, which must trust the
// server's certificate and, for mutual TLS, present one the server accepts.
// Both are cloned. Start fails the test when either is nil.
func WithTLS(server, client *tls.Config) Option {
	return func(s *settings) {
		s.tls = true
		s.broker.ServerTLS, s.broker.ClientTLS = server.Clone(), client.Clone()
	}
}

// WithCompression sets the codecs the harness's producer prefers, in order
// (kgo.SnappyCompression then kgo.NoCompression if not given, as the Gamelan
// engine produces snappy), so that the executor's consumer can be shown to
// decode each. franz-go sends a batch compressed only when that makes it
// smaller.
func WithCompression(codecs ...kgo.CompressionCodec) Option {
	return func(s *settings) { s.compression = slices.Clone(codecs) }
}

// WithClusterOptions passes further options to kfake.NewCluster, after the
// harness's own, for what this package does not wrap: shorter group session
// timeouts (kfake.GroupMinSessionTimeout), broker configs, ACLs and more
// users (kfake.User), a logger. Options that undo the harness's choices
// (kfake.Ports, kfake.ListenFn, kfake.AllowAutoTopicCreation, kfake.DataDir)
// void the guarantees of the package documentation.
func WithClusterOptions(opts ...kfake.Opt) Option {
	return func(s *settings) { s.broker.ClusterOptions = append(s.broker.ClusterOptions, opts...) }
}

// validate reports the first problem with the options.
func (s *settings) validate() error {
	if s.tls && (s.broker.ServerTLS == nil || s.broker.ClientTLS == nil) {
		return errors.New("WithTLS needs both a server and a client configuration")
	}
	return s.broker.Validate()
}

// Broker is a Kafka cluster on 127.0.0.1 with the engine's side of the
// protocol: a kafkaengine.Broker, with a producer of its own and the
// readers and waits of a test. Create it with Start.
type Broker struct {
	*kafkaengine.Broker
	compression []kgo.CompressionCodec

	// producerMu guards producer, created on first use, and closed.
	producerMu sync.Mutex
	producer   *kafkaengine.Producer
	closed     bool
}

// Start starts a cluster on free ports of 127.0.0.1, creates its topics, and
// waits until every broker answers a request. It registers Close as a
// cleanup of t and fails t on a bad option or when the cluster cannot start.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	s := settings{broker: kafkaengine.BrokerConfig{Host: "127.0.0.1", Partitions: DefaultPartitions, Brokers: 1, Topics: append(DefaultTopics(), DeadLetterTopic)}}
	for _, opt := range opts {
		opt(&s)
	}
	if err := s.validate(); err != nil {
		t.Fatalf("kafkatest: start: %v", err)
	}
	if s.persistent {
		s.broker.DataDir = t.TempDir()
	}
	engineBroker, err := kafkaengine.StartBroker(s.broker)
	if err != nil {
		t.Fatalf("kafkatest: start: %v", err)
	}
	b := &Broker{Broker: engineBroker, compression: s.compression}
	t.Cleanup(b.Close)
	return b
}

// Restart closes the cluster, as a broker crash would for its clients, and
// starts a new one on the same ports and data directory, which brings back
// the topics, records, groups and committed offsets; it returns once every
// broker answers a request. Clients, the executor's and the harness's own
// (producer and Readers), reconnect by themselves. It fails t without
// WithPersistence, after Close, or when the cluster cannot come back (for
// instance because another process took one of its ports).
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.RestartAfter(t, nil)
}

// RestartAfter is Restart with an outage of the length down decides: it
// closes the cluster, calls down, and starts the cluster again once down
// returns. down runs on the calling goroutine while the brokers are
// unreachable, typically waiting (with a deadline) until the clients under
// test have noticed, for an outage longer than their own retries.
// Meanwhile the Broker's methods that reach the cluster (producing,
// readers' constructors, inspection, Cluster, Restart, Close) wait for the
// restart to finish, so down must not call them, nor fail the test
// (t.FailNow), which would leave the broker locked: it should record what
// it saw for the test to check afterwards. Addrs and ClientOptions may be
// called.
func (b *Broker) RestartAfter(t testing.TB, down func()) {
	t.Helper()
	if err := b.Broker.Restart(down); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
}

// Close closes the harness's producer and the cluster; with persistence the
// state is saved first (and removed with t's temporary directory). Readers
// are closed by their own cleanups. Close is idempotent; after it, produce
// and inspection methods return errors.
func (b *Broker) Close() {
	b.producerMu.Lock()
	b.closed = true
	if b.producer != nil {
		b.producer.Close()
		b.producer = nil
	}
	b.producerMu.Unlock()
	b.Broker.Close()
}

// inspect calls fn with the running cluster (kafkaengine.Broker.Inspect),
// which cannot be closed or replaced meanwhile.
func (b *Broker) inspect(fn func(c *kfake.Cluster) error) error {
	if err := b.Inspect(fn); errors.Is(err, kafkaengine.ErrClosed) {
		return errors.New("kafkatest: broker closed")
	} else if err != nil {
		return err
	}
	return nil
}

// CommittedOffsets returns the offsets group has committed for topic, by
// partition; a partition without a commit is absent, and a group that does
// not exist (yet) yields an empty map. A committed offset is the next one
// the group will read, as in Kafka. The values come from the cluster's
// state, not from an OffsetFetch request, so injected faults do not affect
// them.
func (b *Broker) CommittedOffsets(group, topic string) (map[int32]int64, error) {
	committed := make(map[int32]int64)
	err := b.inspect(func(c *kfake.Cluster) error {
		if c.TopicInfo(topic) == nil {
			return fmt.Errorf("kafkatest: committed offsets of group %s on topic %s: unknown topic", group, topic)
		}
		info := c.GroupInfo(group)
		if info == nil {
			return nil
		}
		for partition, commit := range info.Commits[topic] {
			committed[partition] = commit.Offset
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return committed, nil
}

// Lag returns how many records of topic group has not committed, summed
// over the partitions: each partition's high watermark minus the group's
// committed offset, or minus the partition's log start offset where the
// group has committed nothing. Zero means every record written so far is
// committed.
func (b *Broker) Lag(group, topic string) (int64, error) {
	var lag int64
	err := b.inspect(func(c *kfake.Cluster) error {
		var err error
		lag, err = lagOf(c, group, topic)
		return err
	})
	return lag, err
}

// lagOf computes Lag on c.
func lagOf(c *kfake.Cluster, group, topic string) (int64, error) {
	partitions := c.PartitionInfos(topic)
	if partitions == nil {
		return 0, fmt.Errorf("kafkatest: lag of group %s on topic %s: unknown topic", group, topic)
	}
	var commits map[int32]kfake.GroupCommit
	if info := c.GroupInfo(group); info != nil {
		commits = info.Commits[topic]
	}
	var lag int64
	for _, p := range partitions {
		from := p.LogStartOffset
		if commit, ok := commits[p.Partition]; ok {
			from = commit.Offset
		}
		if p.HighWatermark > from {
			lag += p.HighWatermark - from
		}
	}
	return lag, nil
}

// WaitForLag waits until Lag(group, topic) equals want, typically 0 once
// the executor has committed everything, and fails with the last lag seen
// when ctx ends first.
func (b *Broker) WaitForLag(ctx context.Context, group, topic string, want int64) error {
	var last int64
	err := b.waitFor(ctx, func(c *kfake.Cluster) (bool, error) {
		lag, err := lagOf(c, group, topic)
		last = lag
		return lag == want, err
	})
	if err != nil {
		return fmt.Errorf("kafkatest: wait for lag %d of group %s on topic %s (last %d): %w", want, group, topic, last, err)
	}
	return nil
}

// GroupMembers returns the number of members of group, 0 when it does not
// exist.
func (b *Broker) GroupMembers(group string) (int, error) {
	var members int
	err := b.inspect(func(c *kfake.Cluster) error {
		if info := c.GroupInfo(group); info != nil {
			members = len(info.Members)
		}
		return nil
	})
	return members, err
}

// WaitGroupStable waits until group is stable (its rebalance finished) with
// members members, or with any number when members is negative, and fails
// when ctx ends first.
func (b *Broker) WaitGroupStable(ctx context.Context, group string, members int) error {
	var state string
	var count int
	err := b.waitFor(ctx, func(c *kfake.Cluster) (bool, error) {
		info := c.GroupInfo(group)
		if info == nil {
			state, count = "absent", 0
			return false, nil
		}
		state, count = info.State, len(info.Members)
		return info.State == "Stable" && (members < 0 || count == members), nil
	})
	if err != nil {
		return fmt.Errorf("kafkatest: wait for group %s stable with %d members (last %s with %d): %w", group, members, state, count, err)
	}
	return nil
}

// waitFor calls done with the running cluster every inspectInterval until
// it reports true or an error, or ctx ends. The cluster may be restarted in
// between calls.
func (b *Broker) waitFor(ctx context.Context, done func(c *kfake.Cluster) (bool, error)) error {
	ticker := time.NewTicker(inspectInterval)
	defer ticker.Stop()
	for {
		var ok bool
		err := b.inspect(func(c *kfake.Cluster) error {
			var err error
			ok, err = done(c)
			return err
		})
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-ticker.C:
		}
	}
}
