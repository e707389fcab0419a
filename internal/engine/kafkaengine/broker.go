package kafkaengine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The default topic names of docs/protocol.md, section 4.
const (
	TasksTopic           = "workflow.tasks"
	ResultsTopic         = "workflow-results"
	RegistrationsTopic   = "executor-registrations"
	HeartbeatsTopic      = "executor-heartbeats"
	UnregistrationsTopic = "executor-unregistrations"
	// DeadLetterTopic is the executor's default dead-letter topic
	// (GAMELAN_EXECUTOR_KAFKA_DEAD_LETTER_TOPIC), not part of the protocol:
	// the embedded brokers create it so that an executor finds it.
	DeadLetterTopic = "workflow.tasks.dlt"
)

// DefaultTopics returns the five default topic names, tasks first.
func DefaultTopics() []string {
	return []string{TasksTopic, ResultsTopic, RegistrationsTopic, HeartbeatsTopic, UnregistrationsTopic}
}

// The SASL mechanisms a Broker takes, spelled as Kafka (and sarama's
// SASLType constants) spell them.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// SASL is the one user of a cluster that requires SASL.
type SASL struct {
	Mechanism, User, Password string
}

// BrokerConfig configures a Broker.
type BrokerConfig struct {
	// Host is the address the brokers listen on (127.0.0.1 if empty).
	Host string
	// AdvertisedHost is the host the brokers name in their metadata, which
	// clients dial once they have bootstrapped (the listening address if
	// empty). Set it when the brokers listen on every interface and clients
	// reach them by a name, such as a container's service name: a broker
	// listening on 0.0.0.0 would otherwise tell them to dial "::".
	AdvertisedHost string
	// Ports are the brokers' ports, one each; empty picks free ones.
	Ports []int
	// Brokers is the number of brokers (1 if 0, or len(Ports)).
	Brokers int
	// Topics are created explicitly at start, each with Partitions
	// partitions (at least 1).
	Topics     []string
	Partitions int
	// DataDir, when set, keeps the cluster's state (topics, records, groups,
	// committed offsets) there, so that Restart brings it back.
	DataDir string
	// SASL, when set, makes every broker require it, the user a superuser.
	SASL *SASL
	// ServerTLS, when set, makes every broker serve TLS; ClientTLS is what
	// the clients of ClientOptions dial with (both needed together).
	ServerTLS, ClientTLS *tls.Config
	// ClusterOptions are passed to kfake.NewCluster after the Broker's own:
	// group session timeouts, broker configs, ACLs, a logger. Options that
	// undo the Broker's choices (ports, listening, automatic topic creation,
	// data directory) void its guarantees.
	ClusterOptions []kfake.Opt
}

// Validate reports the first problem with the configuration.
func (c *BrokerConfig) Validate() error {
	switch {
	case c.Partitions < 1:
		return fmt.Errorf("%d partitions: want at least 1", c.Partitions)
	case c.Brokers < 1 && len(c.Ports) == 0:
		return fmt.Errorf("%d brokers: want at least 1", c.Brokers)
	case len(c.Ports) > 0 && c.Brokers > 0 && c.Brokers != len(c.Ports):
		return fmt.Errorf("%d brokers on %d ports", c.Brokers, len(c.Ports))
	case (c.ServerTLS == nil) != (c.ClientTLS == nil):
		return errors.New("TLS needs both a server and a client configuration")
	}
	for _, topic := range c.Topics {
		if topic == "" {
			return errors.New("empty topic name")
		}
	}
	if c.SASL != nil {
		switch c.SASL.Mechanism {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		default:
			return fmt.Errorf("SASL mechanism %q: want %s, %s or %s", c.SASL.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
		}
		if c.SASL.User == "" {
			return errors.New("SASL needs a user")
		}
	}
	return nil
}

// readyTimeout bounds how long StartBroker and Restart wait for every
// broker to answer a request.
const readyTimeout = 10 * time.Second

// Broker is an in-process Kafka cluster (kfake) whose topics exist from the
// start, created explicitly: automatic topic creation stays off, so that
// producing to or consuming from an unknown topic fails with
// UNKNOWN_TOPIC_OR_PARTITION, as against a production cluster whose topics
// are managed by their owners. Create it with StartBroker.
type Broker struct {
	cfg   BrokerConfig
	ports []int    // the brokers' ports, kept across Restart
	addrs []string // "host:port" of each broker, kept across Restart

	// mu guards cluster and closed. Calls into the cluster hold it for
	// reading, because a kfake.Cluster blocks forever once closed; Restart
	// holds it for writing while it replaces the cluster, and Close while it
	// marks the broker closed.
	mu      sync.RWMutex
	cluster *kfake.Cluster
	closed  bool
}

// StartBroker starts a cluster, creates its topics, and waits until every
// broker answers a request.
func StartBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Brokers == 0 {
		cfg.Brokers = max(len(cfg.Ports), 1)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Broker{cfg: cfg}
	cluster, err := b.newCluster(cfg.Ports)
	if err != nil {
		return nil, fmt.Errorf("start a cluster of %d brokers: %w", cfg.Brokers, err)
	}
	b.cluster = cluster
	for _, addr := range cluster.ListenAddrs() {
		_, portText, err := net.SplitHostPort(addr)
		if err != nil {
			cluster.Close()
			return nil, fmt.Errorf("listen address %q: %w", addr, err)
		}
		port, err := strconv.Atoi(portText)
		if err != nil {
			cluster.Close()
			return nil, fmt.Errorf("listen address %q: %w", addr, err)
		}
		b.ports = append(b.ports, port)
		b.addrs = append(b.addrs, net.JoinHostPort(cfg.Host, portText))
	}
	for _, topic := range cfg.Topics {
		if err := cluster.CreateTopic(topic, int32(cfg.Partitions), nil); err != nil {
			cluster.Close()
			return nil, fmt.Errorf("create topic %s with %d partitions: %w", topic, cfg.Partitions, err)
		}
	}
	if err := b.waitReady(); err != nil {
		cluster.Close()
		return nil, err
	}
	return b, nil
}

// newCluster starts a kfake cluster with the broker's settings, on ports
// when given and on free ports otherwise.
func (b *Broker) newCluster(ports []int) (*kfake.Cluster, error) {
	c := b.cfg
	opts := []kfake.Opt{
		kfake.NumBrokers(c.Brokers),
		kfake.ListenFn(func(network, address string) (net.Listener, error) {
			ln, err := listenOn(c.Host, network, address)
			if err != nil || c.AdvertisedHost == "" {
				return ln, err
			}
			return advertisedListener{Listener: ln, host: c.AdvertisedHost}, nil
		}),
	}
	if len(ports) > 0 {
		opts = append(opts, kfake.Ports(ports...))
	}
	if c.DataDir != "" {
		opts = append(opts, kfake.DataDir(c.DataDir))
	}
	if c.SASL != nil {
		opts = append(opts, kfake.EnableSASL(), kfake.Superuser(c.SASL.Mechanism, c.SASL.User, c.SASL.Password))
	}
	if c.ServerTLS != nil {
		opts = append(opts, kfake.TLS(c.ServerTLS.Clone()))
	}
	opts = append(opts, c.ClusterOptions...)
	return kfake.NewCluster(opts...)
}

// advertisedListener is a listener that names host as its address: kfake
// advertises a broker by its listener's address, so this is how a broker
// tells clients a host other than the one it listens on.
type advertisedListener struct {
	net.Listener
	host string
}

func (l advertisedListener) Addr() net.Addr {
	_, port, _ := net.SplitHostPort(l.Listener.Addr().String())
	return advertisedAddr(net.JoinHostPort(l.host, port))
}

// advertisedAddr is a "host:port" that need not be an IP address.
type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// listenOn listens on host at the port of address, whatever host address
// names, so that a broker is reachable only where the configuration says.
func listenOn(host, network, address string) (net.Listener, error) {
	_, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", address, err)
	}
	if network != "tcp" && network != "tcp4" {
		return nil, fmt.Errorf("listen %s %s: only tcp", network, address)
	}
	return net.Listen(network, net.JoinHostPort(host, port))
}

// waitReady waits until every broker answers a metadata request from a
// fresh client, which authenticates and handshakes as configured.
func (b *Broker) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, addr := range b.addrs {
		client, err := kgo.NewClient(append(b.ClientOptions(), kgo.SeedBrokers(addr))...)
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

// Addrs returns the brokers' addresses, "host:port", the bootstrap servers
// of its clients. They do not change on Restart.
func (b *Broker) Addrs() []string { return slices.Clone(b.addrs) }

// Topics returns the names of the topics StartBroker created.
func (b *Broker) Topics() []string { return slices.Clone(b.cfg.Topics) }

// Partitions returns the number of partitions of each topic StartBroker
// created.
func (b *Broker) Partitions() int { return b.cfg.Partitions }

// ClientOptions returns the franz-go options that reach this cluster: its
// seed brokers, its TLS and SASL settings, and client telemetry (KIP-714)
// off.
func (b *Broker) ClientOptions() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.addrs...),
		kgo.ClientID("gamelan-engine"),
		// KIP-714 telemetry only slows Close down (by up to a second
		// after a Restart, while the final push waits for a broker).
		kgo.DisableClientMetrics(),
	}
	if b.cfg.ClientTLS != nil {
		opts = append(opts, kgo.DialTLSConfig(b.cfg.ClientTLS.Clone()))
	}
	if s := b.cfg.SASL; s != nil {
		opts = append(opts, kgo.SASL(saslMechanism(*s)))
	}
	return opts
}

// saslMechanism returns the franz-go mechanism for s, which Validate has
// checked.
func saslMechanism(s SASL) sasl.Mechanism {
	switch s.Mechanism {
	case SASLScramSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()
	case SASLScramSHA512:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()
	default:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()
	}
}

// Cluster returns the running kfake cluster, for what this package does
// not wrap (fault injection, leader moves, inspection). Restart replaces
// the cluster, so call Cluster again afterwards: the methods of a closed
// kfake.Cluster block forever. Cluster returns nil after Close.
func (b *Broker) Cluster() *kfake.Cluster {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil
	}
	return b.cluster
}

// ErrClosed is returned by a closed Broker.
var ErrClosed = errors.New("kafkaengine: broker closed")

// Inspect calls fn with the running cluster, which cannot be closed or
// replaced meanwhile. fn must be quick and must not call Restart or Close.
func (b *Broker) Inspect(fn func(c *kfake.Cluster) error) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	return fn(b.cluster)
}

// Restart closes the cluster, as a broker crash would for its clients,
// calls down (if not nil) while the brokers are unreachable, and starts a
// new cluster on the same ports and data directory, which brings back the
// topics, records, groups and committed offsets; it returns once every
// broker answers a request. Meanwhile the Broker's methods that reach the
// cluster wait, so down must not call them. It needs a DataDir.
func (b *Broker) Restart(down func()) error {
	if b.cfg.DataDir == "" {
		return errors.New("restart: the broker has no data directory and would lose everything")
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.cluster.Close()
	if down != nil {
		down()
	}
	cluster, err := b.newCluster(b.ports)
	if err != nil {
		b.closed = true
		b.mu.Unlock()
		return fmt.Errorf("restart on ports %v: %w", b.ports, err)
	}
	b.cluster = cluster
	b.mu.Unlock()
	if err := b.waitReady(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// Close closes the cluster; with a DataDir its state is saved first. Close
// is idempotent; afterwards Inspect and Restart fail.
func (b *Broker) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	cluster := b.cluster
	b.mu.Unlock()
	// Nothing calls into the cluster any more: Inspect and Restart check
	// closed under mu, and those that held it have returned.
	cluster.Close()
}
