package devengine

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	kafkamsg "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// KafkaConfig configures the engine's Kafka side.
type KafkaConfig struct {
	// Brokers of an external cluster; empty starts an embedded broker.
	Brokers []string
	// EmbeddedAddress is where the embedded broker listens (127.0.0.1:9092).
	EmbeddedAddress string
	// Partitions of the topics the embedded broker creates (6).
	Partitions int32
	// Topic names (docs/protocol.md defaults if empty).
	TasksTopic, ResultsTopic, RegistrationsTopic, HeartbeatsTopic, UnregistrationsTopic string
	// Group is the engine's consumer group ("gamelan-devengine").
	Group string
	// TokenLag is how far back a record's timestamp may date the check of
	// its token (10m): a record read late (consumer lag, an engine
	// restart) still counts although its token expired meanwhile, while a
	// producer that backdates its records gains no more than this.
	TokenLag time.Duration
}

func (c *KafkaConfig) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.EmbeddedAddress, "127.0.0.1:9092")
	def(&c.TasksTopic, kafkamsg.DefaultTasksTopic)
	def(&c.ResultsTopic, kafkamsg.DefaultResultsTopic)
	def(&c.RegistrationsTopic, kafkamsg.DefaultRegistrationsTopic)
	def(&c.HeartbeatsTopic, kafkamsg.DefaultHeartbeatsTopic)
	def(&c.UnregistrationsTopic, kafkamsg.DefaultUnregistrationsTopic)
	def(&c.Group, "gamelan-devengine")
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.TokenLag == 0 {
		c.TokenLag = 10 * time.Minute
	}
}

// Kafka is the engine's Kafka side: it produces tasks to the tasks topic
// (targetExecutor set) and consumes results, registrations, heartbeats and
// unregistrations. Records whose authorization header fails verification
// (when tokens are on) are refused, counted and dropped (see handle).
type Kafka struct {
	cfg     KafkaConfig
	engine  *Engine
	log     *slog.Logger
	verify  func(token string, at time.Time) (subject string, err error)
	token   func() (string, error)
	cluster *kfake.Cluster // nil with an external cluster
	client  *kgo.Client
}

var (
	_ Deliverer = (*Kafka)(nil)
	_ Router    = (*Kafka)(nil)
)

// NewKafka starts the embedded broker (unless brokers are given) with its
// topics, and connects. verify (a token as of a time, see verifyAsOf) and
// token may be nil.
func NewKafka(cfg KafkaConfig, engine *Engine, verify func(token string, at time.Time) (string, error), token func() (string, error), log *slog.Logger) (*Kafka, error) {
	cfg.defaults()
	k := &Kafka{cfg: cfg, engine: engine, log: log, verify: verify, token: token}
	brokers := cfg.Brokers
	if len(brokers) == 0 {
		host, port, err := net.SplitHostPort(cfg.EmbeddedAddress)
		if err != nil {
			return nil, fmt.Errorf("embedded kafka address %q: %w", cfg.EmbeddedAddress, err)
		}
		portNumber, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded kafka port %q: %w", port, err)
		}
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(portNumber),
			kfake.ListenFn(func(network, address string) (net.Listener, error) {
				_, p, _ := net.SplitHostPort(address)
				return net.Listen(network, net.JoinHostPort(host, p))
			}))
		if err != nil {
			return nil, fmt.Errorf("start embedded kafka on %s: %w", cfg.EmbeddedAddress, err)
		}
		k.cluster = cluster
		for _, topic := range []string{cfg.TasksTopic, cfg.ResultsTopic, cfg.RegistrationsTopic, cfg.HeartbeatsTopic, cfg.UnregistrationsTopic} {
			if err := cluster.CreateTopic(topic, cfg.Partitions, nil); err != nil {
				cluster.Close()
				return nil, fmt.Errorf("create topic %s: %w", topic, err)
			}
		}
		brokers = cluster.ListenAddrs()
		log.Info("embedded kafka broker started", slog.Any("brokers", brokers))
	}
	client, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.ResultsTopic, cfg.RegistrationsTopic, cfg.HeartbeatsTopic, cfg.UnregistrationsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.FetchMaxWait(50*time.Millisecond),
	)
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	k.client = client
	return k, nil
}

// Brokers are the addresses executors should use.
func (k *Kafka) Brokers() []string {
	if k.cluster != nil {
		return k.cluster.ListenAddrs()
	}
	return k.cfg.Brokers
}

// Run consumes until ctx ends.
func (k *Kafka) Run(ctx context.Context) {
	for {
		fetches := k.client.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			k.log.Warn("kafka fetch error", slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("error", err))
		})
		fetches.EachRecord(k.handle)
	}
}

// handle takes one record from the executor side. With tokens on, the
// record's token is checked as of when the record was produced (one read
// late, after its token expired, still counts), and the executor id the
// record speaks for, when it names one, must be the token's subject.
func (k *Kafka) handle(r *kgo.Record) {
	subject, err := k.authenticate(r)
	if err != nil {
		k.refuse(r, err)
		return
	}
	executorID, apply, err := k.decode(r)
	switch {
	case err != nil:
		k.log.Warn("malformed kafka record dropped", slog.String("topic", r.Topic), slog.Int64("offset", r.Offset), slog.Any("error", err))
	case subject != "" && executorID != "" && executorID != subject:
		k.refuse(r, fmt.Errorf("a token of %s on a record of %s", subject, executorID))
	default:
		apply()
	}
}

// authenticate returns the subject of the record's token, "" when tokens
// are off.
func (k *Kafka) authenticate(r *kgo.Record) (string, error) {
	if k.verify == nil {
		return "", nil
	}
	authorization := ""
	for _, h := range r.Headers {
		if h.Key == kafkamsg.AuthorizationHeader {
			authorization = string(h.Value)
		}
	}
	token, err := security.BearerToken(authorization)
	if err != nil {
		return "", err
	}
	return k.verify(token, k.tokenTime(r))
}

// tokenTime is when a record's token is checked: its timestamp (the
// producer's clock), but no earlier than TokenLag ago, and now when it has
// none or one in the future.
func (k *Kafka) tokenTime(r *kgo.Record) time.Time {
	now := time.Now()
	switch {
	case r.Timestamp.Unix() <= 0 || r.Timestamp.After(now):
		return now
	case r.Timestamp.Before(now.Add(-k.cfg.TokenLag)):
		return now.Add(-k.cfg.TokenLag)
	}
	return r.Timestamp
}

func (k *Kafka) refuse(r *kgo.Record, err error) {
	k.engine.Refused()
	k.log.Warn("kafka record refused", slog.String("topic", r.Topic), slog.Int64("offset", r.Offset), slog.Any("error", err))
}

// decode reads a record: the executor it speaks for, and what the engine
// does with it.
func (k *Kafka) decode(r *kgo.Record) (executorID string, apply func(), err error) {
	switch r.Topic {
	case k.cfg.ResultsTopic:
		var m kafkamsg.ResultMessage
		err = json.Unmarshal(r.Value, &m)
		return m.ExecutorID, func() { k.engine.Result(resultFromMessage(m)) }, err
	case k.cfg.RegistrationsTopic:
		var m kafkamsg.RegistrationMessage
		err = json.Unmarshal(r.Value, &m)
		return m.ExecutorID, func() {
			k.engine.Register(Executor{ID: m.ExecutorID, Type: m.ExecutorType, CommunicationType: cmp.Or(m.CommunicationType, "KAFKA"),
				Endpoint: m.Endpoint, SupportedNodeTypes: m.SupportedTypes, MaxConcurrent: m.MaxConcurrentTasks,
				Metadata: m.Metadata, Via: "kafka"})
		}, err
	case k.cfg.HeartbeatsTopic:
		var m kafkamsg.HeartbeatMessage
		err = json.Unmarshal(r.Value, &m)
		// A heartbeat of an unknown executor cannot be answered on a topic;
		// the executor's periodic re-registration brings it back.
		return m.ExecutorID, func() {
			_ = k.engine.Heartbeat(domain.Heartbeat{ExecutorID: m.ExecutorID, CurrentTasks: m.CurrentTaskCount, Status: m.Health.Status})
		}, err
	case k.cfg.UnregistrationsTopic:
		var m kafkamsg.UnregistrationMessage
		err = json.Unmarshal(r.Value, &m)
		return m.ExecutorID, func() { k.engine.Unregister(m.ExecutorID) }, err
	}
	return "", nil, fmt.Errorf("unexpected topic %s", r.Topic)
}

func resultFromMessage(m kafkamsg.ResultMessage) domain.Result {
	r := domain.Result{
		TaskID: m.TaskID, RunID: m.RunID, NodeID: m.NodeID, Attempt: m.Attempt, ExecutionToken: m.ExecutionToken,
		ExecutorID: m.ExecutorID, Status: domain.Status(m.Status), Output: m.Output, CompletedAt: m.CompletedAt,
		Duration: time.Duration(m.DurationMs) * time.Millisecond,
	}
	if m.Error != nil {
		r.Error = &domain.ErrorInfo{Code: m.Error.Code, Message: m.Error.Message, Retryable: m.Error.Retryable, Context: m.Error.Context, StackTrace: m.StackTrace}
	}
	return r
}

// Route implements Router.
func (k *Kafka) Route(Executor) string { return "kafka" }

// Deliver implements Deliverer: the task goes to the tasks topic, keyed by
// run id, addressed to the executor; accepted once the broker acknowledges.
func (k *Kafka) Deliver(ctx context.Context, to Executor, task domain.Task) (string, error) {
	msg := kafkamsg.TaskMessage{
		RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt, Token: task.ExecutionToken, Context: task.Context,
		TargetExecutor: to.ID, TaskID: task.TaskID, NodeType: task.NodeType, ExecutorType: task.ExecutorType,
		TimeoutSeconds: int64(task.Timeout / time.Second), IdempotencyKey: task.Key(),
	}
	if !task.ScheduledAt.IsZero() {
		at := task.ScheduledAt.UTC()
		msg.ScheduledAt = &at
	}
	value, err := json.Marshal(msg)
	if err != nil {
		return "", err
	}
	record := &kgo.Record{Topic: k.cfg.TasksTopic, Key: []byte(task.RunID), Value: value}
	if k.token != nil {
		token, err := k.token()
		if err != nil {
			return "", err
		}
		record.Headers = []kgo.RecordHeader{{Key: kafkamsg.AuthorizationHeader, Value: []byte("Bearer " + token)}}
	}
	if err := k.client.ProduceSync(ctx, record).FirstErr(); err != nil {
		return "", fmt.Errorf("produce task %s: %w", task.TaskID, err)
	}
	return "kafka", nil
}

// Close closes the client and the embedded broker.
func (k *Kafka) Close() {
	if k.client != nil {
		k.client.Close()
	}
	if k.cluster != nil {
		k.cluster.Close()
	}
}
