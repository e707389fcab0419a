package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// The headers a dead-lettered record carries after its own, all UTF-8
// text, so that kcat and any consumer can read them.
const (
	// HeaderDLTOriginalTopic, -Partition and -Offset say where the record
	// was read (the partition and offset in decimal).
	HeaderDLTOriginalTopic     = "dlt-original-topic"
	HeaderDLTOriginalPartition = "dlt-original-partition"
	HeaderDLTOriginalOffset    = "dlt-original-offset"
	// HeaderDLTErrorClass is why it was dead-lettered: DeadLetterUnaddressable
	// or DeadLetterUndeliverable.
	HeaderDLTErrorClass = "dlt-error-class"
	// HeaderDLTErrorMessage is the error, clipped to deadLetterMessageBytes.
	HeaderDLTErrorMessage = "dlt-error-message"
	// HeaderDLTTime is when it was dead-lettered, RFC 3339 in UTC.
	HeaderDLTTime = "dlt-time"
	// HeaderDLTTraceID is the trace id of the record's traceparent header,
	// present only when the record has a valid one.
	HeaderDLTTraceID = "dlt-trace-id"
)

// The error classes of dead-lettered records, also the reason label of
// the dead-letter metrics.
const (
	// DeadLetterUnaddressable: a task record no result can name
	// (undecodable, or without a valid run id, node id and attempt).
	DeadLetterUnaddressable = "unaddressable"
	// DeadLetterUndeliverable: a task whose result could not be delivered
	// in any form (the runtime dead-lettered it: domain.ErrUndeliverable).
	DeadLetterUndeliverable = "result-undeliverable"
)

// deadLetterMessageBytes bounds the error message header: the error of an
// undecodable record may quote it.
const deadLetterMessageBytes = 1024

// deadLetterBackoff paces the attempts to write one dead-letter record.
var deadLetterBackoff = domain.Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2}

// deadLetterer writes task records to the dead-letter topic, at least
// once: the record's offset is finished (so committed) only once the
// brokers acknowledged its copy (acks=all). Writing is retried with
// backoff while the claim's session lasts; a session ending first leaves
// the record unfinished, so the partition's next owner reads it again and
// dead-letters it in turn.
//
// Writing that fails for longer than the timeout (Config.DeadLetterTimeout)
// gives the record up: logged at error level with its position, counted in
// gamelan_executor_kafka_dead_letter_failures_total, and committed anyway.
// The alternative, never committing it, would hold back every later offset
// of the partition for as long as the dead-letter topic is away (offsets
// commit only as a contiguous run), so one bad record would turn an outage
// of an auxiliary topic into redelivery of the whole partition after each
// rebalance, and unbounded lag. The record itself stays in the tasks topic
// until its retention ends, where the logged offset finds it.
type deadLetterer struct {
	topic    string
	timeout  time.Duration
	producer *Producer // its own: no token headers, connects on first use
	log      *slog.Logger
	running  sync.WaitGroup // writes in progress and the topic check

	// written and failed count records by class.
	written, failed map[string]*atomic.Int64
}

// newDeadLetterer returns the dead-letterer of cfg, or nil when
// dead-lettering is off.
func newDeadLetterer(cfg Config, log *slog.Logger) (*deadLetterer, error) {
	if cfg.DeadLetterTopic == "" {
		return nil, nil
	}
	producer, err := NewProducer(cfg)
	if err != nil {
		return nil, fmt.Errorf("dead-letter producer: %w", err)
	}
	producer.WithLog(log)
	d := &deadLetterer{topic: cfg.DeadLetterTopic, timeout: cfg.DeadLetterTimeout, producer: producer, log: log,
		written: map[string]*atomic.Int64{}, failed: map[string]*atomic.Int64{}}
	for _, class := range []string{DeadLetterUnaddressable, DeadLetterUndeliverable} {
		d.written[class], d.failed[class] = new(atomic.Int64), new(atomic.Int64)
	}
	return d, nil
}

// deadLetter finishes a record no result can name: at once when
// dead-lettering is off, else once its copy is written (or given up). The
// record counts as in flight meanwhile, so that a rebalance gives it a
// moment to finish.
func (s *TaskSource) deadLetter(tracker *offsetTracker, msg *sarama.ConsumerMessage, class string, cause error) {
	if s.dlt == nil {
		tracker.finish(msg.Offset)
		return
	}
	tracker.begin()
	s.dlt.running.Go(func() {
		defer tracker.end()
		if s.dlt.write(tracker.session.Context(), msg, class, cause) {
			tracker.finish(msg.Offset)
		}
	})
}

// settle is a delivery's Settle: a task whose result the runtime
// dead-lettered is written to the dead-letter topic before its offset is
// finished; any other verdict goes to the tracker as is. It does not block
// the runtime's caller.
func (s *TaskSource) settle(tracker *offsetTracker, msg *sarama.ConsumerMessage, err error) {
	if s.dlt == nil || !errors.Is(err, domain.ErrUndeliverable) || tracker.session.Context().Err() != nil {
		// Off, not dead-lettered, or settled after the session: then the
		// tracker marks nothing, and the next owner reads it again.
		tracker.settle(msg, err)
		return
	}
	s.dlt.running.Go(func() {
		if s.dlt.write(tracker.session.Context(), msg, DeadLetterUndeliverable, err) {
			tracker.settle(msg, err) // finishes it
			return
		}
		tracker.end() // not finished: the next owner reads it again
	})
}

// write copies msg to the dead-letter topic, retrying until it is
// acknowledged, the timeout passes, or ctx (the claim's session) ends. It
// reports whether the record may be finished: written, or given up.
func (d *deadLetterer) write(ctx context.Context, msg *sarama.ConsumerMessage, class string, cause error) bool {
	rec := d.record(msg, class, cause, time.Now())
	log := d.log.With(slog.String("topic", msg.Topic), slog.Int("partition", int(msg.Partition)),
		slog.Int64("offset", msg.Offset), slog.String("dead_letter_topic", d.topic), slog.String("error_class", class))
	giveUp, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var err error
	for attempt := 0; ; attempt++ {
		if err = d.producer.send(giveUp, []record{rec}); err == nil {
			d.written[class].Add(1)
			log.Debug("task record dead-lettered", slog.Any("cause", cause))
			return true
		}
		if errors.Is(err, domain.ErrResultRejected) {
			break // too large, or invalid: sending it again cannot succeed
		}
		if ctx.Err() == nil && giveUp.Err() == nil {
			err = deadLetterBackoff.Wait(giveUp, attempt)
		}
		if ctx.Err() != nil {
			log.Info("partition released before its record was dead-lettered; its next owner reads it again", slog.Any("error", err))
			return false
		}
		if giveUp.Err() != nil {
			break // timed out
		}
	}
	d.failed[class].Add(1)
	log.Error("task record could not be dead-lettered; committed anyway, so that its partition goes on",
		slog.Duration("tried_for", d.timeout), slog.Any("cause", cause), slog.Any("error", err))
	return true
}

// record is msg's copy for the dead-letter topic: the same key, value and
// headers, and the dlt-* headers. The engine's bearer token is left out:
// it is a credential, and the dead-letter topic's readers are not the
// executor it was minted for.
func (d *deadLetterer) record(msg *sarama.ConsumerMessage, class string, cause error, now time.Time) record {
	headers := make([]sarama.RecordHeader, 0, len(msg.Headers)+7)
	for _, h := range msg.Headers {
		if h != nil && !strings.EqualFold(string(h.Key), AuthorizationHeader) {
			headers = append(headers, *h)
		}
	}
	add := func(name, value string) {
		headers = append(headers, sarama.RecordHeader{Key: []byte(name), Value: []byte(value)})
	}
	add(HeaderDLTOriginalTopic, msg.Topic)
	add(HeaderDLTOriginalPartition, strconv.Itoa(int(msg.Partition)))
	add(HeaderDLTOriginalOffset, strconv.FormatInt(msg.Offset, 10))
	add(HeaderDLTErrorClass, class)
	add(HeaderDLTErrorMessage, domain.Clip(errorText(cause), deadLetterMessageBytes))
	add(HeaderDLTTime, now.UTC().Format(time.RFC3339))
	if id := traceID(msg.Headers); id != "" {
		add(HeaderDLTTraceID, id)
	}
	return record{topic: d.topic, rawKey: msg.Key, keepKey: true, value: msg.Value, headers: headers}
}

// errorText is err's message, "" for nil.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// traceID returns the trace id of the record's W3C traceparent header
// ("00-<32 hex>-<16 hex>-<2 hex>"), or "" when it has no valid one.
func traceID(headers []*sarama.RecordHeader) string {
	tc := traceFromHeaders(headers)
	if tc == nil {
		return ""
	}
	parts := strings.Split(tc.TraceParent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0123456789abcdef") != "" || strings.Trim(parts[1], "0") == "" {
		return ""
	}
	return parts[1]
}

// checkTopic warns once the brokers answer if the dead-letter topic does
// not exist: topics are never created here, and every dead letter would
// then fail. It retries while the brokers are away, until ctx ends.
func (d *deadLetterer) checkTopic(ctx context.Context, cfg Config) {
	for attempt := 0; ; attempt++ {
		exists, err := topicExists(cfg, d.topic)
		if err == nil {
			if !exists {
				d.log.Warn("kafka dead-letter topic does not exist: records sent to it will fail until it is created, or set GAMELAN_EXECUTOR_KAFKA_DEAD_LETTER_TOPIC (off turns dead-lettering off)",
					slog.String("dead_letter_topic", d.topic))
			}
			return
		}
		if rejoinBackoff.Wait(ctx, attempt) != nil {
			return
		}
	}
}

// topicExists asks the brokers' metadata whether topic exists.
func topicExists(cfg Config, topic string) (bool, error) {
	sc, err := cfg.base()
	if err != nil {
		return false, err
	}
	sc.Net.DialTimeout = 5 * time.Second // a check, not worth a long wait
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return false, err
	}
	defer func() { _ = client.Close() }()
	topics, err := client.Topics()
	if err != nil {
		return false, err
	}
	return slices.Contains(topics, topic), nil
}

// close waits for the writes in progress (their sessions have ended by
// then, so they stop) and closes the producer.
func (d *deadLetterer) close() {
	if d == nil {
		return
	}
	d.running.Wait()
	_ = d.producer.Close() // a failed flush is a record not finished: read again
}

// DeadLetters returns how many task records the source wrote to the
// dead-letter topic, and how many it gave up, by error class; nil when
// dead-lettering is off. The metrics read it at each scrape.
func (s *TaskSource) DeadLetters() []telemetry.DeadLetters {
	if s.dlt == nil {
		return nil
	}
	var counts []telemetry.DeadLetters
	for _, class := range []string{DeadLetterUnaddressable, DeadLetterUndeliverable} {
		counts = append(counts, telemetry.DeadLetters{Reason: class,
			Written: s.dlt.written[class].Load(), Failed: s.dlt.failed[class].Load()})
	}
	return counts
}
