package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"
	"github.com/xdg-go/scram"
)

// sarama records every request and response in go-metrics histograms and
// meters, which nothing in this service reads (its own metrics are on
// /q/metrics): under load they cost about 6% of the process's CPU
// (make bench -profile). go-metrics offers only a process-wide switch; it
// is thrown before any sarama client exists.
func init() { metrics.UseNilMetrics = true }

// Config configures the Kafka adapters.
type Config struct {
	// Brokers are the bootstrap servers, host:port. Required.
	Brokers []string
	// GroupID is the consumer group; replicas of one service share it,
	// which is how Kafka executors scale out. Required for the TaskSource.
	GroupID string
	// ClientID names this process to the brokers ("gamelan-executor" if empty).
	ClientID string
	// Topic names (docs/protocol.md defaults if empty).
	TasksTopic, ResultsTopic, RegistrationsTopic, HeartbeatsTopic, UnregistrationsTopic string
	// MaxMessageBytes bounds a record, taken or produced (1 MiB, Gamelan's
	// cap, if 0). A larger task is answered FAILED INVALID_TASK when its ids
	// can be read; a larger result is produced as FAILED OUTPUT_TOO_LARGE.
	MaxMessageBytes int
	// SASL, when Mechanism is set, authenticates to the brokers: PLAIN,
	// SCRAM-SHA-256 or SCRAM-SHA-512.
	SASL SASL
	// TLS, when set, encrypts the connections to the brokers.
	TLS *tls.Config
	// FetchMaxWait is how long a fetch waits for records when there are none
	// (20ms if 0): the floor of an idle consumer's latency.
	FetchMaxWait time.Duration
	// Version is the Kafka protocol version spoken (2.8 if zero).
	Version sarama.KafkaVersion
	// Idempotence chooses whether the Producer is idempotent (see
	// IdempotenceAuto, the default when empty).
	Idempotence Idempotence
	// DeadLetterTopic is where the TaskSource writes records it cannot
	// answer and tasks whose result was dead-lettered (see deadletter.go);
	// empty turns dead-lettering off: such records are only logged and
	// committed.
	DeadLetterTopic string
	// DeadLetterTimeout bounds how long writing one record to the
	// dead-letter topic is retried before the record is committed anyway
	// (DefaultDeadLetterTimeout if 0).
	DeadLetterTimeout time.Duration
	// Ordering is the order in which the TaskSource runs the tasks of one
	// partition (Unordered if empty); see Ordering.
	Ordering Ordering
}

// SASL holds SASL credentials.
type SASL struct {
	Mechanism string
	User      string
	Password  string
}

// The default topic names, from docs/protocol.md, section 4.
const (
	DefaultTasksTopic           = "workflow.tasks"
	DefaultResultsTopic         = "workflow-results"
	DefaultRegistrationsTopic   = "executor-registrations"
	DefaultHeartbeatsTopic      = "executor-heartbeats"
	DefaultUnregistrationsTopic = "executor-unregistrations"
	// DefaultMaxMessageBytes is Gamelan's cap on a message.
	DefaultMaxMessageBytes = 1 << 20
	// DefaultDeadLetterTopic is the service's default dead-letter topic.
	// The adapters' Config has dead-lettering off unless a topic is named.
	DefaultDeadLetterTopic = "workflow.tasks.dlt"
)

func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.ClientID, "gamelan-executor")
	def(&c.TasksTopic, DefaultTasksTopic)
	def(&c.ResultsTopic, DefaultResultsTopic)
	def(&c.RegistrationsTopic, DefaultRegistrationsTopic)
	def(&c.HeartbeatsTopic, DefaultHeartbeatsTopic)
	def(&c.UnregistrationsTopic, DefaultUnregistrationsTopic)
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.FetchMaxWait == 0 {
		c.FetchMaxWait = 20 * time.Millisecond
	}
	if c.Version == (sarama.KafkaVersion{}) {
		c.Version = sarama.V2_8_0_0
	}
	if c.Idempotence == "" {
		c.Idempotence = IdempotenceAuto
	}
	if c.DeadLetterTimeout == 0 {
		c.DeadLetterTimeout = DefaultDeadLetterTimeout
	}
	return c
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("kafka: no brokers")
	}
	switch c.SASL.Mechanism {
	case "", sarama.SASLTypePlaintext, sarama.SASLTypeSCRAMSHA256, sarama.SASLTypeSCRAMSHA512:
	default:
		return fmt.Errorf("kafka: SASL mechanism %q: must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASL.Mechanism)
	}
	if c.SASL.Mechanism != "" && c.SASL.User == "" {
		return errors.New("kafka: SASL needs a user")
	}
	switch c.Idempotence {
	case "", IdempotenceAuto, IdempotenceOn, IdempotenceOff:
	default:
		return fmt.Errorf("kafka: idempotence %q: must be auto, on or off", c.Idempotence)
	}
	if err := c.Ordering.validate(); err != nil {
		return err
	}
	return nil
}

// base returns the sarama settings shared by producers and consumers.
func (c Config) base() (*sarama.Config, error) {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version = c.Version
	sc.Metadata.AllowAutoTopicCreation = false // topics are created by their owners, never by accident
	if c.TLS != nil {
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = c.TLS
	}
	if c.SASL.Mechanism != "" {
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Mechanism = sarama.SASLMechanism(c.SASL.Mechanism)
		sc.Net.SASL.User = c.SASL.User
		sc.Net.SASL.Password = c.SASL.Password
		switch c.SASL.Mechanism {
		case sarama.SASLTypeSCRAMSHA256:
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
		case sarama.SASLTypeSCRAMSHA512:
			sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
		}
	}
	return sc, nil
}

// producerConfig is tuned for latency and safety: every record waits for
// all in-sync replicas (acks=all), nothing waits to fill a batch (no flush
// frequency: sarama batches only what piles up while a request is in
// flight), and results of a run stay in order on one partition (key = run id).
func (c Config) producerConfig() (*sarama.Config, error) {
	sc, err := c.base()
	if err != nil {
		return nil, err
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Flush.Frequency = 0
	sc.Producer.Flush.Messages = 0
	sc.Producer.Flush.Bytes = 0
	sc.Producer.Retry.Max = 5
	sc.Producer.Retry.Backoff = 100 * time.Millisecond
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	sc.Producer.MaxMessageBytes = c.withDefaults().MaxMessageBytes
	// Kafka before 0.11 has no idempotent producer: auto does without it
	// there, and on lets sarama refuse the configuration.
	switch c.withDefaults().Idempotence {
	case IdempotenceOn:
		makeIdempotent(sc)
	case IdempotenceAuto:
		if sc.Version.IsAtLeast(sarama.V0_11_0_0) {
			makeIdempotent(sc)
		}
	}
	return sc, nil
}

// makeIdempotent turns on sarama's idempotent producer, with the settings
// sarama requires of it: acks=all (already set), one request in flight per
// connection (so that a retried batch cannot overtake the next), and
// retries. The brokers then drop a batch they already wrote when a retry
// sends it again, so a lost acknowledgement no longer duplicates a result.
// Getting the producer id is retried only briefly: connecting is retried
// by the Producer anyway, and a broker that lacks the API answers at once.
func makeIdempotent(sc *sarama.Config) {
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Transaction.Retry.Max = 2
	sc.Producer.Transaction.Retry.Backoff = 100 * time.Millisecond
}

// consumerConfig reads from the oldest record of a partition the group has
// never committed (tasks sent before the first executor joined are not
// lost), commits marked offsets every 250ms and at every rebalance (a crash
// redelivers at most that much finished work), and decodes whatever
// compression the engine used.
func (c Config) consumerConfig() (*sarama.Config, error) {
	sc, err := c.base()
	if err != nil {
		return nil, err
	}
	c = c.withDefaults()
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = 250 * time.Millisecond
	sc.Consumer.MaxWaitTime = c.FetchMaxWait
	sc.Consumer.Fetch.Max = int32(c.MaxMessageBytes) * 4
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRoundRobin()}
	sc.Consumer.Group.Session.Timeout = 10 * time.Second
	sc.Consumer.Group.Heartbeat.Interval = 3 * time.Second
	sc.Consumer.Return.Errors = true
	return sc, nil
}

// scramClient adapts xdg-go/scram to sarama's SCRAMClient.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (s *scramClient) Begin(user, password, authzID string) error {
	client, err := s.hash.NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("scram: %w", err)
	}
	s.conv = client.NewConversation()
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) { return s.conv.Step(challenge) }

func (s *scramClient) Done() bool { return s.conv.Done() }

// Idempotence is whether results are produced by an idempotent producer.
type Idempotence string

// The Idempotence modes.
const (
	// IdempotenceAuto tries the idempotent producer and falls back, with a
	// warning, to a plain one when the brokers cannot give it a producer id
	// (InitProducerId missing from their API versions, or refused for want
	// of the IDEMPOTENT_WRITE permission).
	IdempotenceAuto Idempotence = "auto"
	// IdempotenceOn requires the idempotent producer: connecting fails
	// where the brokers cannot give one.
	IdempotenceOn Idempotence = "on"
	// IdempotenceOff never asks for one: a producer retry after a lost
	// acknowledgement may duplicate a record (consumers deduplicate).
	IdempotenceOff Idempotence = "off"
)

// DefaultDeadLetterTimeout is how long writing a record to the dead-letter
// topic is retried before the record is given up (logged, counted and
// committed): long enough to ride out a leader election or a broker
// restart, short enough that one record cannot hold its partition's
// commits back for long.
const DefaultDeadLetterTimeout = 30 * time.Second
