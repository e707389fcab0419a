package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// revokeGrace is how long a partition taken away by a rebalance waits for
// its tasks in flight to finish, so that their offsets are committed before
// the new owner starts from the last commit (fewer redeliveries).
const revokeGrace = 5 * time.Second

// rejoinBackoff paces attempts to join the consumer group again after a
// failure.
var rejoinBackoff = domain.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2}

// TaskSource consumes the tasks topic in a consumer group and offers each
// task to the runtime, at least once and losing none:
//
//   - A record's offset is committed only after its result has been
//     acknowledged by the brokers (see offsetTracker); tasks of a partition
//     run concurrently, so one slow task does not block its partition.
//   - Config.Ordering may instead run the tasks of one key (KeyOrder) or of
//     the whole partition (PartitionOrder) one after another; records that
//     wait their turn are held by the claim, a bounded number (orderGate).
//   - Flow control: before offering the next record the source waits for
//     room in the runtime; meanwhile sarama's bounded buffers fill and
//     fetching pauses. Nothing is buffered without bound.
//   - A record whose targetExecutor names neither one of this service's
//     executor ids nor one of its types is skipped (and committed).
//   - A malformed record (too large, not UTF-8, not JSON, wrong shape) or
//     an invalid task (ids against the engine's rule, an attempt out of
//     range, an idempotency key of another task) is offered for the runtime
//     to answer FAILED INVALID_TASK, committed once that answer is
//     acknowledged. One that no result can name (no valid run id, node id
//     and attempt) is skipped and committed, with a throttled log line
//     naming its offset, once copied to the dead-letter topic (see
//     deadLetterer); either way the partition goes on.
//   - A task whose result can never be delivered is dead-lettered by the
//     runtime, copied to the dead-letter topic, and its offset committed:
//     it is never read again.
//   - Tasks are redeliverable: a task the runtime hands back is not
//     committed; while the source reads it is offered again, and after
//     Stop it is left to the group (read again after the next rebalance or
//     restart).
//
// Stop stops reading but keeps the group session, so that tasks settled
// during the drain still commit: Settle is honoured until Close, which
// leaves the group. A stopped source also leaves the group at the next
// rebalance (a successor joining), so that it does not keep partitions it
// will not read.
type TaskSource struct {
	cfg       Config
	consumer  *sarama.Config
	ids       map[string]bool   // executor ids served over Kafka
	types     map[string]string // executor types served over Kafka -> their executor ids
	log       *slog.Logger
	refusals  *telemetry.Throttle
	consuming sync.WaitGroup

	mu         sync.Mutex
	intake     ports.Intake
	cancel     context.CancelFunc // ends the consume loop (Close)
	consumeCtx context.Context    // ends with Close
	stopRead   context.CancelFunc // ends reading (Stop)
	readCtx    context.Context
	// offering is held (read) while a claim offers a task, so that Stop can
	// wait until no Offer is in progress.
	offering sync.RWMutex
	// admitting is held from AwaitCapacity to Offer, so that the claims of
	// the source's partitions do not both see the same free room and one
	// of them offer into a full runtime.
	admitting sync.Mutex
	health    error
	// outOfSession is when the last group session ended, zero while in
	// one: a session can end without an error (a rebalance, a broker
	// gone) and rejoining can then take as long as the brokers are away.
	outOfSession time.Time
	// lag knows the partitions the source holds, for ConsumerLag.
	lag claimLags
	// dlt writes to the dead-letter topic; nil when it is off.
	dlt *deadLetterer
}

// rejoinGrace is how long the source may be between two group sessions
// before it reports itself unhealthy: a rebalance takes less, so readiness
// does not flap at each one, while a broker outage shows within it.
const rejoinGrace = 5 * time.Second

var (
	_ ports.TaskSource     = (*TaskSource)(nil)
	_ ports.HealthReporter = (*TaskSource)(nil)
)

// NewTaskSource returns a source that joins the group when started,
// through a consumer-group client of its own (never shared with a
// producer), connecting and reconnecting in the background so that a
// service starts while the brokers are down (it is not ready meanwhile).
// executors are the types served over Kafka.
func NewTaskSource(cfg Config, executors []domain.Registration, log *slog.Logger) (*TaskSource, error) {
	cfg = cfg.withDefaults()
	if cfg.GroupID == "" {
		return nil, errors.New("kafka task source: no consumer group id")
	}
	sc, err := cfg.consumerConfig()
	if err != nil {
		return nil, err
	}
	s := &TaskSource{cfg: cfg, consumer: sc, ids: map[string]bool{}, types: map[string]string{},
		log: log, refusals: telemetry.NewThrottle(0, 0), health: errors.New("not in the consumer group yet")}
	for _, reg := range executors {
		s.ids[reg.ExecutorID] = true
		s.types[reg.Descriptor.Type] = reg.ExecutorID
	}
	if s.dlt, err = newDeadLetterer(cfg, log); err != nil {
		return nil, err
	}
	return s, nil
}

// Start implements ports.TaskSource: it joins the group and consumes until
// Stop (reading) and Close (the group).
func (s *TaskSource) Start(ctx context.Context, intake ports.Intake) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start kafka task source: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return errors.New("kafka task source started twice")
	}
	s.intake = intake
	consumeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.consumeCtx = cancel, consumeCtx
	s.readCtx, s.stopRead = context.WithCancel(consumeCtx)
	s.consuming.Go(func() { s.consume(consumeCtx) })
	if s.dlt != nil {
		s.dlt.running.Go(func() { s.dlt.checkTopic(consumeCtx, s.cfg) })
	}
	return nil
}

// Stop implements ports.TaskSource: no Offer follows its return; offsets of
// tasks settled afterwards are still committed until Close.
func (s *TaskSource) Stop(context.Context) error {
	s.mu.Lock()
	stop := s.stopRead
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.offering.Lock() // waits for an Offer in progress
	defer s.offering.Unlock()
	return nil
}

// Close implements ports.TaskSource: it stops the source if it was not
// stopped, then leaves the group, committing what is finished, and closes
// the client. Tasks still unsettled are not waited for: their offsets stay
// uncommitted, so the group delivers them again, and their Settle, if it
// comes, no longer commits anything. If ctx ends before the group is left,
// Close returns ctx's cause and the leaving goes on in the background.
func (s *TaskSource) Close(ctx context.Context) error {
	_ = s.Stop(ctx)
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	left := make(chan struct{})
	go func() {
		defer close(left)
		s.consuming.Wait()
		s.dlt.close() // its writes stop with the sessions
	}()
	select {
	case <-left:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close kafka task source: %w", context.Cause(ctx))
	}
}

// Healthy implements ports.HealthReporter: the source is in its group, or
// has been out of a session for less than rejoinGrace.
func (s *TaskSource) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.health != nil {
		return s.health
	}
	if out := time.Since(s.outOfSession); !s.outOfSession.IsZero() && out > rejoinGrace {
		return fmt.Errorf("consumer group %s: rejoining for %s", s.cfg.GroupID, out.Round(time.Second))
	}
	return nil
}

// sessionEnded records that a group session ended (Setup ends the gap).
func (s *TaskSource) sessionEnded() {
	s.mu.Lock()
	if s.outOfSession.IsZero() {
		s.outOfSession = time.Now()
	}
	s.mu.Unlock()
}

func (s *TaskSource) setHealth(err error) {
	s.mu.Lock()
	s.health = err
	s.mu.Unlock()
}

// consume keeps the source in its group across rebalances and broker
// outages until ctx ends, then leaves it.
func (s *TaskSource) consume(ctx context.Context) {
	var group sarama.ConsumerGroup
	var errorsDone sync.WaitGroup // logErrors ends when the group is closed
	defer func() {
		if group != nil {
			if err := group.Close(); err != nil {
				s.log.Warn("leave kafka consumer group", slog.Any("error", err))
			}
		}
		errorsDone.Wait()
	}()
	for attempt := 0; ; attempt++ {
		var err error
		if group == nil {
			group, err = sarama.NewConsumerGroup(s.cfg.Brokers, s.cfg.GroupID, s.consumer)
			if err == nil {
				errorsDone.Go(func() { s.logErrors(group) })
			} else {
				group = nil
				err = fmt.Errorf("connect to %v: %w", s.cfg.Brokers, err)
			}
		}
		if group != nil {
			err = group.Consume(ctx, []string{s.cfg.TasksTopic}, s)
			s.sessionEnded()
		}
		if ctx.Err() != nil || s.stoppedReading() {
			// Closed; or stopped, and the session that could still commit
			// the drain has ended: rejoining would only take partitions
			// away from the replicas that read them.
			return
		}
		if err == nil {
			attempt = -1 // a rebalance: rejoin at once
			continue
		}
		s.setHealth(fmt.Errorf("consumer group %s: %w", s.cfg.GroupID, err))
		s.log.Warn("kafka consumer group failed, retrying", slog.Int("attempt", attempt+1), slog.Any("error", err))
		if rejoinBackoff.Wait(ctx, attempt) != nil {
			return
		}
	}
}

// stoppedReading reports whether Stop was called.
func (s *TaskSource) stoppedReading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readCtx != nil && s.readCtx.Err() != nil
}

// logErrors logs the group's asynchronous errors until it is closed.
func (s *TaskSource) logErrors(group sarama.ConsumerGroup) {
	for err := range group.Errors() {
		s.log.Warn("kafka consumer error", slog.Any("error", err))
	}
}

// Setup implements sarama.ConsumerGroupHandler.
func (s *TaskSource) Setup(session sarama.ConsumerGroupSession) error {
	s.mu.Lock()
	s.health, s.outOfSession = nil, time.Time{}
	s.mu.Unlock()
	// The session is over when its context ends (a failed heartbeat, a
	// rebalance), although Consume returns only once the claims have
	// finished and the last commit was tried, which lasts while the
	// brokers are away.
	context.AfterFunc(session.Context(), s.sessionEnded)
	s.log.Info("joined kafka consumer group", slog.String("group", s.cfg.GroupID),
		slog.Any("partitions", session.Claims()[s.cfg.TasksTopic]), slog.Int("generation", int(session.GenerationID())))
	return nil
}

// Cleanup implements sarama.ConsumerGroupHandler.
func (s *TaskSource) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim implements sarama.ConsumerGroupHandler: it reads one
// partition until the session ends or the source stops reading.
func (s *TaskSource) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	tracker := newOffsetTracker(session, claim.Topic(), claim.Partition(), claim.InitialOffset())
	defer tracker.close()
	// gate holds back records that must wait for an earlier one of their
	// key (KeyOrder, PartitionOrder; nil when Unordered). It is the claim's
	// own: records it still holds when the claim ends are dropped
	// uncommitted, for the partition's next owner to read again.
	gate := newOrderGate(s.cfg.Ordering)
	if gate != nil {
		tracker.finished = gate.release
	}
	defer s.lag.hold(claim, tracker)()
	s.mu.Lock()
	readCtx, closeCtx, intake := s.readCtx, s.consumeCtx, s.intake
	s.mu.Unlock()
	// offerCtx ends with reading or with the session, whichever comes
	// first: a claim waiting for room in a full runtime must let go of its
	// partition when the session ends (a rebalance, a lost broker), since
	// the session cannot end before every claim returns.
	offerCtx, cancel := context.WithCancel(readCtx)
	defer cancel()
	defer context.AfterFunc(session.Context(), cancel)()
	for {
		select {
		case msg, ok := <-readable(claim, gate):
			if !ok { // the session is ending
				s.awaitFinished(closeCtx, tracker)
				return nil
			}
			s.handle(offerCtx, intake, tracker, gate, msg)
		case <-tracker.redeliveries():
			for _, msg := range tracker.takeHandedBack() {
				s.take(offerCtx, intake, tracker, msg)
			}
		case <-gate.readied():
			for _, msg := range gate.takeReady() {
				s.take(offerCtx, intake, tracker, msg)
			}
		case <-readCtx.Done():
			// Stopped reading: keep the session, so that tasks settled
			// during the drain commit, until it ends (Close or rebalance).
			<-session.Context().Done()
			s.awaitFinished(closeCtx, tracker)
			return nil
		case <-session.Context().Done():
			s.awaitFinished(closeCtx, tracker)
			return nil
		}
	}
}

// awaitFinished gives the claim's tasks in flight in the runtime a moment
// to finish, so that their offsets commit before the partition moves (a
// rebalance). Records refused or handed back are not waited for: they will
// not finish. Nor is anything once closeCtx ends: Close is when the runtime
// has settled all it will, and Settle is not honoured after it.
func (s *TaskSource) awaitFinished(closeCtx context.Context, tracker *offsetTracker) {
	n, empty := tracker.outstanding()
	if n == 0 {
		return
	}
	select {
	case <-empty:
	case <-closeCtx.Done():
	case <-time.After(revokeGrace):
		s.log.Info("partition released with tasks in flight; they will be redelivered",
			slog.String("topic", tracker.topic), slog.Int("partition", int(tracker.partition)), slog.Int("tasks", n))
	}
}

// handle tracks one record read from the partition and takes it, unless
// the gate holds it back behind an earlier record of its key: it is then
// tracked (so not committed) and taken when released.
func (s *TaskSource) handle(ctx context.Context, intake ports.Intake, tracker *offsetTracker, gate *orderGate, msg *sarama.ConsumerMessage) {
	tracker.track(msg.Offset)
	if gate.admit(msg) {
		s.take(ctx, intake, tracker, msg)
	}
}

// take decodes, filters and offers a tracked record: one just read, or one
// the runtime handed back. A malformed or invalid record is offered too, for
// the runtime to answer FAILED INVALID_TASK; one that no result can name
// (no valid run id, node id or attempt) is refused, logged (throttled) and
// skipped, and the partition goes on.
func (s *TaskSource) take(ctx context.Context, intake ports.Intake, tracker *offsetTracker, msg *sarama.ConsumerMessage) {
	task, malformed := decodeTask(msg.Value, s.cfg.MaxMessageBytes)
	task.Trace = traceFromHeaders(msg.Headers) // a record is one task: its headers are the task's
	if target := task.ExecutorID; target != "" && !s.ids[target] {
		id, ours := s.types[target]
		if !ours {
			s.recordLog(msg).Debug("task for another executor skipped", slog.String("target_executor", domain.Clip(target, domain.QuoteBytes)))
			tracker.finish(msg.Offset)
			return
		}
		// A target naming one of our types sends the task to that type's
		// executor: a routing hint, checked against the declared types.
		task.ExecutorID = id
	}
	if err := s.offer(ctx, intake, tracker, msg, &task, malformed); errors.Is(err, domain.ErrInvalidTask) {
		s.refusals.Log(s.recordLog(msg), slog.LevelWarn, "unaddressable", "task record skipped: it is invalid, and no result can name it",
			slog.String("run_id", domain.Clip(task.RunID, domain.QuoteBytes)), slog.String("node_id", domain.Clip(task.NodeID, domain.QuoteBytes)),
			slog.Any("error", err))
		s.deadLetter(tracker, msg, DeadLetterUnaddressable, err)
	}
}

// offer offers a decoded task once the runtime has room (ports.Pull), and
// returns nil once it is admitted, ErrInvalidTask when the runtime refuses
// it as such, or another error when it was not taken (stopped, draining, or
// the session ended): the record is then not finished, so it is read again.
func (s *TaskSource) offer(ctx context.Context, intake ports.Intake, tracker *offsetTracker, msg *sarama.ConsumerMessage, task *domain.Task, malformed error) error {
	s.offering.RLock()
	defer s.offering.RUnlock()
	s.admitting.Lock()
	defer s.admitting.Unlock()
	// Pull checks ctx under offering: once Stop holds it, ctx has ended, so
	// no Offer follows Stop's return.
	return ports.Pull(ctx, intake, func(ctx context.Context) error {
		tracker.begin()
		err := intake.Offer(ctx, ports.Delivery{Task: task, Malformed: malformed, Redeliverable: true, Settle: func(err error) {
			s.settle(tracker, msg, err)
		}})
		if err != nil {
			tracker.end()
		}
		return err
	})
}

// recordLog is the logger of lines about one record, built only when a
// line is written.
func (s *TaskSource) recordLog(msg *sarama.ConsumerMessage) *slog.Logger {
	return s.log.With(slog.String("topic", msg.Topic), slog.Int("partition", int(msg.Partition)), slog.Int64("offset", msg.Offset))
}
