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

	"github.com/twmb/franz-go/pkg/kgo"

	kafkamsg "github.com/gamelan-go/executor/internal/adapters/kafka"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/engine/kafkaengine"
	"github.com/gamelan-go/executor/internal/security"
)

// KafkaConfig configures the engine's Kafka side.
type KafkaConfig struct {
	// Brokers of an external cluster; empty starts an embedded broker.
	Brokers []string
	// EmbeddedAddress is where the embedded broker listens (127.0.0.1:9092).
	EmbeddedAddress string
	// AdvertisedHost is the host the embedded broker tells clients to dial
	// (EmbeddedAddress's host if empty): the engine's name on a container
	// network when it listens on 0.0.0.0.
	AdvertisedHost string
	// Partitions of the topics the embedded broker creates (6).
	Partitions int32
	// Topic names (docs/protocol.md defaults if empty).
	TasksTopic, ResultsTopic, RegistrationsTopic, HeartbeatsTopic, UnregistrationsTopic string
	// DeadLetterTopic is the executor's dead-letter topic, which the
	// embedded broker creates too (kafkaengine.DeadLetterTopic if empty).
	DeadLetterTopic string
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
	def(&c.TasksTopic, kafkaengine.TasksTopic)
	def(&c.ResultsTopic, kafkaengine.ResultsTopic)
	def(&c.RegistrationsTopic, kafkaengine.RegistrationsTopic)
	def(&c.HeartbeatsTopic, kafkaengine.HeartbeatsTopic)
	def(&c.UnregistrationsTopic, kafkaengine.UnregistrationsTopic)
	def(&c.DeadLetterTopic, kafkaengine.DeadLetterTopic)
	def(&c.Group, "gamelan-devengine")
	if c.Partitions == 0 {
		c.Partitions = 6
	}
	if c.TokenLag == 0 {
		c.TokenLag = 10 * time.Minute
	}
}

// Kafka is the engine's Kafka side, on the protocol's engine side
// (kafkaengine): an embedded broker with the protocol's topics (unless
// brokers are given), a producer of tasks to the tasks topic
// (targetExecutor set), and a consumer, in the engine's group, of results,
// registrations, heartbeats and unregistrations. Records whose
// authorization header fails verification (when tokens are on) are
// refused, counted and dropped (see handle).
type Kafka struct {
	cfg      KafkaConfig
	engine   *Engine
	log      *slog.Logger
	verify   func(token string, at time.Time) (subject string, err error)
	token    func() (string, error)
	broker   *kafkaengine.Broker // nil with an external cluster
	producer *kafkaengine.Producer
	consumer *kafkaengine.Consumer
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
	opts := []kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}
	if len(cfg.Brokers) == 0 {
		host, port, err := net.SplitHostPort(cfg.EmbeddedAddress)
		if err != nil {
			return nil, fmt.Errorf("embedded kafka address %q: %w", cfg.EmbeddedAddress, err)
		}
		portNumber, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded kafka port %q: %w", port, err)
		}
		k.broker, err = kafkaengine.StartBroker(kafkaengine.BrokerConfig{Host: host, AdvertisedHost: cfg.AdvertisedHost, Ports: []int{portNumber}, Partitions: int(cfg.Partitions),
			Topics: []string{cfg.TasksTopic, cfg.ResultsTopic, cfg.RegistrationsTopic, cfg.HeartbeatsTopic, cfg.UnregistrationsTopic, cfg.DeadLetterTopic}})
		if err != nil {
			return nil, fmt.Errorf("start embedded kafka on %s: %w", cfg.EmbeddedAddress, err)
		}
		opts = k.broker.ClientOptions()
		log.Info("embedded kafka broker started", slog.Any("brokers", k.broker.Addrs()))
	}
	var err error
	if k.consumer, err = kafkaengine.NewConsumer(opts, cfg.Group, cfg.ResultsTopic, cfg.RegistrationsTopic, cfg.HeartbeatsTopic, cfg.UnregistrationsTopic); err == nil {
		k.producer, err = kafkaengine.NewProducer(opts)
	}
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return k, nil
}

// Brokers are the addresses executors should use.
func (k *Kafka) Brokers() []string {
	if k.broker != nil {
		return k.broker.Addrs()
	}
	return k.cfg.Brokers
}

// Run consumes until ctx ends.
func (k *Kafka) Run(ctx context.Context) {
	k.consumer.Run(ctx, func(batch []kafkaengine.Record) {
		for _, r := range batch {
			k.handle(r)
		}
	}, func(topic string, partition int32, err error) {
		k.log.Warn("kafka fetch error", slog.String("topic", topic), slog.Int("partition", int(partition)), slog.Any("error", err))
	})
}

// handle takes one record from the executor side. With tokens on, the
// record's token is checked as of when the record was produced (one read
// late, after its token expired, still counts), and the executor id the
// record speaks for, when it names one, must be the token's subject.
func (k *Kafka) handle(r kafkaengine.Record) {
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
func (k *Kafka) authenticate(r kafkaengine.Record) (string, error) {
	if k.verify == nil {
		return "", nil
	}
	token, err := security.BearerToken(r.Headers[kafkamsg.AuthorizationHeader])
	if err != nil {
		return "", err
	}
	return k.verify(token, k.tokenTime(r))
}

// tokenTime is when a record's token is checked: its timestamp (the
// producer's clock), but no earlier than TokenLag ago, and now when it has
// none or one in the future.
func (k *Kafka) tokenTime(r kafkaengine.Record) time.Time {
	now := time.Now()
	switch {
	case r.Timestamp.Unix() <= 0 || r.Timestamp.After(now):
		return now
	case r.Timestamp.Before(now.Add(-k.cfg.TokenLag)):
		return now.Add(-k.cfg.TokenLag)
	}
	return r.Timestamp
}

func (k *Kafka) refuse(r kafkaengine.Record, err error) {
	k.engine.Refused()
	k.log.Warn("kafka record refused", slog.String("topic", r.Topic), slog.Int64("offset", r.Offset), slog.Any("error", err))
}

// decode reads a record: the executor it speaks for, and what the engine
// does with it.
func (k *Kafka) decode(r kafkaengine.Record) (executorID string, apply func(), err error) {
	switch r.Topic {
	case k.cfg.ResultsTopic:
		var m kafkamsg.ResultMessage
		err = json.Unmarshal(r.Value, &m)
		return m.ExecutorID, func() {
			res := resultFromMessage(m)
			res.Trace = domain.TraceFromHeaders(func(name string) []string {
				if value, ok := r.Headers[name]; ok {
					return []string{value}
				}
				return nil
			})
			res.Output = withoutTraceKeys(res.Output)
			k.engine.Result(res)
		}, err
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
			_ = k.engine.Heartbeat(domain.Heartbeat{ExecutorID: m.ExecutorID, CurrentTasks: m.CurrentTaskCount, Status: m.Health.Status, Load: m.Health.Load})
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
	headers := traceHeaders(task.Trace)
	if k.token != nil {
		token, err := k.token()
		if err != nil {
			return "", err
		}
		headers[kafkamsg.AuthorizationHeader] = "Bearer " + token
	}
	if err := k.producer.ProduceTask(ctx, k.cfg.TasksTopic, msg, headers); err != nil {
		return "", fmt.Errorf("produce task %s: %w", task.TaskID, err)
	}
	return "kafka", nil
}

// Close closes the clients and the embedded broker.
func (k *Kafka) Close() {
	if k.consumer != nil {
		k.consumer.Close()
	}
	if k.producer != nil {
		k.producer.Close()
	}
	if k.broker != nil {
		k.broker.Close()
	}
}

// traceHeaders returns the record headers of a task's trace context: one
// per non-empty value (none when tracing is off).
func traceHeaders(tc *domain.TraceContext) map[string]string {
	headers := map[string]string{}
	tc.EachHeader(func(name, value string) { headers[name] = value })
	return headers
}
