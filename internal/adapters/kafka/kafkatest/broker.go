package kafkatest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The default topic names of docs/protocol.md, section 4, which Start creates
// unless WithTopics names others, and which the typed helpers (ProduceTask,
// Results, Registrations, ...) use.
const (
	TasksTopic           = "workflow.tasks"
	ResultsTopic         = "workflow-results"
	RegistrationsTopic   = "executor-registrations"
	HeartbeatsTopic      = "executor-heartbeats"
	UnregistrationsTopic = "executor-unregistrations"
)

// The SASL mechanisms WithSASL accepts, spelled as Kafka (and sarama's
// SASLType constants) spell them.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// DefaultPartitions is the number of partitions of every topic Start creates
// unless WithPartitions says otherwise. It is more than one so that
// ordering and group assignment across partitions are exercised.
const DefaultPartitions = 4

// DefaultTopics returns the five default topic names of docs/protocol.md,
// section 4, tasks first.
func DefaultTopics() []string {
	return []string{TasksTopic, ResultsTopic, RegistrationsTopic, HeartbeatsTopic, UnregistrationsTopic}
}

// readyTimeout bounds how long Start and Restart wait for every broker to
// answer a request.
const readyTimeout = 10 * time.Second

// inspectInterval is how often WaitForLag and WaitGroupStable look at the
// cluster's state, which kfake does not announce.
const inspectInterval = 10 * time.Millisecond

// Option configures a Broker at Start.
type Option func(*settings)

// settings is what the options set; it does not change after Start.
type settings struct {
	partitions  int
	brokers     int
	topics      []string
	persistent  bool
	sasl        *saslSettings
	tls         bool // WithTLS was given
	serverTLS   *tls.Config
	clientTLS   *tls.Config
	compression []kgo.CompressionCodec
	clusterOpts []kfake.Opt
}

// saslSettings is the one SASL user of a cluster.
type saslSettings struct {
	mechanism, user, password string
}

// WithPartitions sets the number of partitions of every topic Start creates
// (DefaultPartitions if not given). It must be at least 1.
func WithPartitions(n int) Option {
	return func(s *settings) { s.partitions = n }
}

// WithBrokers sets the number of brokers of the cluster (1 if not given),
// each on its own port of 127.0.0.1. Partition leadership is spread over
// them, so that clients must follow leaders (see Cluster for moving them).
// It must be at least 1.
func WithBrokers(n int) Option {
	return func(s *settings) { s.brokers = n }
}

// WithTopics replaces the topics Start creates (DefaultTopics if not given)
// by names. Typed helpers such as ProduceTask and Results keep using the
// default names; use ProduceJSON, NewMessageReader and ResultsFrom for
// others.
func WithTopics(names ...string) Option {
	return func(s *settings) { s.topics = slices.Clone(names) }
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
		s.sasl = &saslSettings{mechanism: mechanism, user: user, password: password}
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
		s.serverTLS, s.clientTLS = server.Clone(), client.Clone()
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
	return func(s *settings) { s.clusterOpts = append(s.clusterOpts, opts...) }
}

// Broker is a Kafka cluster on 127.0.0.1 with the engine's side of the
// protocol. Create it with Start.
type Broker struct {
	settings settings
	dataDir  string   // empty without persistence
	ports    []int    // the brokers' ports, kept across Restart
	addrs    []string // "127.0.0.1:port" of each broker, kept across Restart

	// mu guards cluster and closed. Calls into the cluster hold it for
	// reading, because a kfake.Cluster blocks forever once closed; Restart
	// holds it for writing while it replaces the cluster, and Close while
	// it marks the broker closed.
	mu      sync.RWMutex
	cluster *kfake.Cluster
	closed  bool

	// producerMu guards producer, created on first use.
	producerMu sync.Mutex
	producer   *kgo.Client
}

// Start starts a cluster on free ports of 127.0.0.1, creates its topics, and
// waits until every broker answers a request. It registers Close as a
// cleanup of t and fails t on a bad option or when the cluster cannot start.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	s := settings{partitions: DefaultPartitions, brokers: 1, topics: DefaultTopics()}
	for _, opt := range opts {
		opt(&s)
	}
	if err := s.validate(); err != nil {
		t.Fatalf("kafkatest: start: %v", err)
	}
	b := &Broker{settings: s}
	if s.persistent {
		b.dataDir = t.TempDir()
	}
	cluster, err := b.newCluster(nil)
	if err != nil {
		t.Fatalf("kafkatest: start cluster of %d brokers: %v", s.brokers, err)
	}
	b.cluster = cluster
	t.Cleanup(b.Close)

	for _, addr := range cluster.ListenAddrs() {
		_, portText, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("kafkatest: start: listen address %q: %v", addr, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			t.Fatalf("kafkatest: start: listen address %q: %v", addr, err)
		}
		b.ports = append(b.ports, port)
		b.addrs = append(b.addrs, net.JoinHostPort("127.0.0.1", portText))
	}
	for _, topic := range s.topics {
		if err := cluster.CreateTopic(topic, int32(s.partitions), nil); err != nil {
			t.Fatalf("kafkatest: start: create topic %s with %d partitions: %v", topic, s.partitions, err)
		}
	}
	if err := b.waitReady(); err != nil {
		t.Fatalf("kafkatest: start: %v", err)
	}
	return b
}

// validate reports the first problem with the options.
func (s *settings) validate() error {
	switch {
	case s.partitions < 1:
		return fmt.Errorf("%d partitions: want at least 1", s.partitions)
	case s.brokers < 1:
		return fmt.Errorf("%d brokers: want at least 1", s.brokers)
	case s.tls && (s.serverTLS == nil || s.clientTLS == nil):
		return errors.New("WithTLS needs both a server and a client configuration")
	}
	for _, topic := range s.topics {
		if topic == "" {
			return errors.New("WithTopics: empty topic name")
		}
	}
	if s.sasl != nil {
		switch s.sasl.mechanism {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		default:
			return fmt.Errorf("SASL mechanism %q: want %s, %s or %s", s.sasl.mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
		}
		if s.sasl.user == "" {
			return errors.New("SASL needs a user")
		}
	}
	return nil
}

// newCluster starts a kfake cluster with the broker's settings, on ports
// when given and on free ports otherwise.
func (b *Broker) newCluster(ports []int) (*kfake.Cluster, error) {
	s := b.settings
	opts := []kfake.Opt{
		kfake.NumBrokers(s.brokers),
		kfake.ListenFn(listenLoopback),
	}
	if ports != nil {
		opts = append(opts, kfake.Ports(ports...))
	}
	if b.dataDir != "" {
		opts = append(opts, kfake.DataDir(b.dataDir))
	}
	if s.sasl != nil {
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser(s.sasl.mechanism, s.sasl.user, s.sasl.password))
	}
	if s.serverTLS != nil {
		opts = append(opts, kfake.TLS(s.serverTLS.Clone()))
	}
	opts = append(opts, s.clusterOpts...)
	return kfake.NewCluster(opts...)
}

// listenLoopback listens on 127.0.0.1 at the port of address, whatever host
// address names, so that no broker is ever reachable from outside the
// machine.
func listenLoopback(network, address string) (net.Listener, error) {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", address, err)
	}
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("listen %s %s: only tcp on 127.0.0.1", network, address)
	}
	return net.Listen("tcp4", net.JoinHostPort("127.0.0.1", port))
}

// waitReady waits until every broker answers a metadata request from a
// fresh client, which authenticates and handshakes as configured.
func (b *Broker) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, addr := range b.addrs {
		opts := append(b.ClientOptions(), kgo.SeedBrokers(addr))
		client, err := kgo.NewClient(opts...)
		if err != nil {
			return fmt.Errorf("client for broker %s: %w", addr, err)
		}
		err = client.Ping(ctx)
		client.Close()
		if err != nil {
			return fmt.Errorf("broker %s does not answer: %w", addr, err)
		}
	}
	return nil
}

// Addrs returns the brokers' addresses, "127.0.0.1:port", the bootstrap
// servers for the executor's configuration. They do not change on Restart.
func (b *Broker) Addrs() []string {
	return slices.Clone(b.addrs)
}

// Topics returns the names of the topics Start created.
func (b *Broker) Topics() []string {
	return slices.Clone(b.settings.topics)
}

// Partitions returns the number of partitions of each topic Start created.
func (b *Broker) Partitions() int {
	return b.settings.partitions
}

// ClientOptions returns the franz-go options that reach this cluster: its
// seed brokers, the TLS and SASL settings of WithTLS and WithSASL, and
// client telemetry (KIP-714) off. Add kgo.ConsumerGroup and the like for a
// client of the test's own, and close that client before the test ends.
func (b *Broker) ClientOptions() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.addrs...),
		kgo.ClientID("kafkatest"),
		// KIP-714 telemetry only slows Close down (by up to a second
		// after a Restart, while the final push waits for a broker).
		kgo.DisableClientMetrics(),
	}
	if b.settings.clientTLS != nil {
		opts = append(opts, kgo.DialTLSConfig(b.settings.clientTLS.Clone()))
	}
	if s := b.settings.sasl; s != nil {
		opts = append(opts, kgo.SASL(saslMechanism(*s)))
	}
	return opts
}

// saslMechanism returns the franz-go mechanism for s, which validate has
// checked.
func saslMechanism(s saslSettings) sasl.Mechanism {
	switch s.mechanism {
	case SASLScramSHA256:
		return scram.Auth{User: s.user, Pass: s.password}.AsSha256Mechanism()
	case SASLScramSHA512:
		return scram.Auth{User: s.user, Pass: s.password}.AsSha512Mechanism()
	default:
		return plain.Auth{User: s.user, Pass: s.password}.AsMechanism()
	}
}

// Cluster returns the running kfake cluster, for what this package does
// not wrap: fault injection (Fault, Control, SleepControl), leader moves
// (ShufflePartitionLeaders, MoveTopicPartition), topic changes (CreateTopic,
// DeleteRecords) and inspection (GroupInfo, PartitionInfos). Restart
// replaces the cluster, so call Cluster again afterwards: the methods of a
// closed kfake.Cluster block forever. Cluster returns nil after Close.
func (b *Broker) Cluster() *kfake.Cluster {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil
	}
	return b.cluster
}

// inspect calls fn with the running cluster, which cannot be closed or
// replaced meanwhile. fn must be quick and must not call Restart or Close.
func (b *Broker) inspect(fn func(c *kfake.Cluster) error) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return errors.New("kafkatest: broker closed")
	}
	return fn(b.cluster)
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
	b.restart(t, nil)
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
	b.restart(t, down)
}

// restart implements Restart and RestartAfter.
func (b *Broker) restart(t testing.TB, down func()) {
	t.Helper()
	if b.dataDir == "" {
		t.Fatalf("kafkatest: restart: the broker was started without WithPersistence and would lose everything")
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		t.Fatalf("kafkatest: restart: broker closed")
	}
	b.cluster.Close()
	if down != nil {
		down()
	}
	cluster, err := b.newCluster(b.ports)
	if err != nil {
		b.closed = true
		b.mu.Unlock()
		t.Fatalf("kafkatest: restart on ports %v: %v", b.ports, err)
	}
	b.cluster = cluster
	b.mu.Unlock()
	if err := b.waitReady(); err != nil {
		t.Fatalf("kafkatest: restart: %v", err)
	}
}

// Close closes the harness's producer and the cluster; with persistence the
// state is saved first (and removed with t's temporary directory). Readers
// are closed by their own cleanups. Close is idempotent; after it, produce
// and inspection methods return errors.
func (b *Broker) Close() {
	// Lock order: producerMu before mu, never the other way round.
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	cluster := b.cluster
	b.mu.Unlock()

	b.producerMu.Lock()
	if b.producer != nil {
		b.producer.Close()
		b.producer = nil
	}
	b.producerMu.Unlock()

	// Nothing calls into the cluster any more: inspect and Restart check
	// closed under mu, and those that held it have returned.
	cluster.Close()
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
