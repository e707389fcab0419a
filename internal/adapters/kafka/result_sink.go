package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// ResultSink produces results as ResultMessage JSON to the results topic,
// keyed by run id, and returns once the brokers acknowledged every record
// (acks=all). A result's trace context travels in its record's headers
// traceparent, tracestate and baggage (and, when its task brought it in its
// context, in its output's reserved keys too).
//
// A result whose record (key, value and headers) would exceed
// MaxMessageBytes could never be produced, and would hold its batch (and its
// task's offset) back for ever: it is produced as a FAILED OUTPUT_TOO_LARGE
// result without output instead (domain.Result.TooLarge), and if even that
// does not fit, the batch is refused with domain.ErrResultRejected, as it is
// when the brokers refuse a record for good (see Producer): the runtime then
// isolates the result at fault rather than resending the batch for ever.
type ResultSink struct {
	producer *Producer
	topic    string
	maxValue int
}

var _ ports.ResultSink = (*ResultSink)(nil)

// recordOverhead is room kept in a record for its authorization header and
// the record's framing (half the record at most); the key is counted apart.
const recordOverhead = 8 << 10

// NewResultSink returns a sink producing to cfg's results topic.
func NewResultSink(producer *Producer, cfg Config) *ResultSink {
	cfg = cfg.withDefaults()
	return &ResultSink{producer: producer, topic: cfg.ResultsTopic, maxValue: cfg.MaxMessageBytes - min(recordOverhead, cfg.MaxMessageBytes/2)}
}

// Deliver implements ports.ResultSink.
func (s *ResultSink) Deliver(ctx context.Context, results []domain.Result) error {
	records := make([]record, len(results))
	for i, r := range results {
		headers := traceHeaders(r.Trace)
		limit := s.maxValue - len(r.RunID) - headersSize(headers) // the key and the trace context
		value := encodeResult(r)
		if len(value) > limit {
			small := r.TooLarge(len(value), limit)
			small.Trace = r.Trace // already in headers; kept for the output's reserved keys
			value = encodeResult(small)
			if len(value) > limit {
				return fmt.Errorf("deliver %d results: %w: the result for run %s node %s is %d bytes even without output, more than the %d a record holds",
					len(results), domain.ErrResultTooLarge, domain.Quote(r.RunID), domain.Quote(r.NodeID), len(value), limit)
			}
		}
		records[i] = record{topic: s.topic, key: r.RunID, executorID: r.ExecutorID, value: value, headers: headers}
	}
	err := s.producer.send(ctx, records)
	if errors.Is(err, domain.ErrResultTooLarge) {
		// A broker refuses a whole record batch for one record too large,
		// and sarama batches the records of concurrent deliveries together:
		// this batch may only have shared a record batch with the culprit.
		// Each record is sent again alone, so that only a record too large
		// itself is refused.
		for _, rec := range records {
			if err = s.producer.sendAlone(ctx, rec); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("deliver %d results: %w", len(results), err)
	}
	return nil
}

// Registrar announces executor types on the registrations topic and
// withdraws them on the unregistrations topic, keyed by executor id. The
// Gamelan engine consumes neither (against it, register over HTTP); the
// reference engine consumes both.
type Registrar struct {
	producer                    *Producer
	registrations, unregistered string
}

var _ ports.Registrar = (*Registrar)(nil)

// NewRegistrar returns a Registrar producing to cfg's topics.
func NewRegistrar(producer *Producer, cfg Config) *Registrar {
	cfg = cfg.withDefaults()
	return &Registrar{producer: producer, registrations: cfg.RegistrationsTopic, unregistered: cfg.UnregistrationsTopic}
}

// Register implements ports.Registrar: it returns once the registration
// record is acknowledged by the brokers.
func (r *Registrar) Register(ctx context.Context, reg domain.Registration) error {
	supported := reg.Descriptor.SupportedNodeTypes
	if supported == nil {
		supported = []string{}
	}
	return r.produce(ctx, r.registrations, reg.ExecutorID, RegistrationMessage{
		ExecutorID:         reg.ExecutorID,
		ExecutorType:       reg.Descriptor.Type,
		CommunicationType:  string(reg.CommunicationType),
		SupportedTypes:     supported,
		MaxConcurrentTasks: reg.Descriptor.MaxConcurrentTasks,
		Endpoint:           reg.Endpoint,
		Metadata:           reg.Metadata,
		Timestamp:          time.Now().UTC(),
	})
}

// Unregister implements ports.Registrar.
func (r *Registrar) Unregister(ctx context.Context, executorID string) error {
	return r.produce(ctx, r.unregistered, executorID, UnregistrationMessage{ExecutorID: executorID, Timestamp: time.Now().UTC()})
}

func (r *Registrar) produce(ctx context.Context, topic, executorID string, msg any) error {
	value, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode %s record for %s: %w", topic, executorID, err)
	}
	if err := r.producer.send(ctx, []record{{topic: topic, key: executorID, executorID: executorID, value: value}}); err != nil {
		return fmt.Errorf("%s for %s: %w", topic, executorID, err)
	}
	return nil
}

// Heartbeater reports load on the heartbeats topic, keyed by executor id.
// A broker cannot tell that the engine forgot an executor, so a heartbeat
// fails only when its record is not acknowledged.
type Heartbeater struct {
	registrar *Registrar
	topic     string
}

var _ ports.Heartbeater = (*Heartbeater)(nil)

// NewHeartbeater returns a Heartbeater producing to cfg's heartbeats topic.
func NewHeartbeater(producer *Producer, cfg Config) *Heartbeater {
	return &Heartbeater{registrar: NewRegistrar(producer, cfg), topic: cfg.withDefaults().HeartbeatsTopic}
}

// Heartbeat implements ports.Heartbeater.
func (h *Heartbeater) Heartbeat(ctx context.Context, hb domain.Heartbeat) error {
	return h.registrar.produce(ctx, h.topic, hb.ExecutorID, HeartbeatMessage{
		ExecutorID:       hb.ExecutorID,
		CurrentTaskCount: hb.CurrentTasks,
		Health: HeartbeatHealth{
			Status:         hb.Status,
			CurrentTasks:   hb.CurrentTasks,
			CompletedTasks: hb.CompletedTasks,
			FailedTasks:    hb.FailedTasks,
			Load:           hb.Load,
		},
		Timestamp: time.Now().UTC(),
	})
}
