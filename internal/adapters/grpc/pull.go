package grpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/telemetry"
)

// offerPulled hands a task read from an engine stream to the runtime
// (ports.Pull). It waits for room before offering, and stops reading
// meanwhile rather than buffering, which pushes back on the engine through
// gRPC flow control: the engine may send more than the runtime can take
// (ExecuteStream is bounded by the registration's max concurrent tasks, not
// by the room left, and other sources share the room), and a pull source
// must not offer into a full runtime. It returns nil once the task is taken
// or answered, and an error when the runtime is draining or ctx ends (see
// offerOutcome).
func (c pullConfig) offerPulled(ctx context.Context, intake ports.Intake, task domain.Task, malformed error, log *slog.Logger) error {
	err := ports.Pull(ctx, intake, func(ctx context.Context) error {
		return intake.Offer(ctx, ports.Delivery{Task: &task, Malformed: malformed})
	})
	return c.offerOutcome(&task, err, log)
}

// offerOutcome deals with the end of a pulled task's offer: nil once the
// task is taken or answered, else the error that ends the stream's session.
// A pulled task cannot be handed back on the stream, so the engine learns at
// once of a task the runtime will not take: the runtime itself answers an
// invalid task FAILED INVALID_TASK when a result can name it (one that
// cannot is refused, and only logged, throttled), and a task refused while
// draining is answered here with a retryable FAILED SHUTDOWN.
func (c pullConfig) offerOutcome(task *domain.Task, err error, log *slog.Logger) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, domain.ErrDraining):
		c.answer(log, unrun{task: task})
		return err
	case errors.Is(err, domain.ErrInvalidTask):
		c.refusals.Log(log, slog.LevelWarn, "unaddressable", "task from the engine refused, and no result can name it",
			slog.String("run_id", task.RunID), slog.String("node_id", task.NodeID), slog.Any("error", err))
		return nil
	}
	return err // ctx ended
}

// answerTimeout bounds the delivery of answers to tasks never offered.
const answerTimeout = 5 * time.Second

// unrun is a task received on a stream that the runtime will never run:
// cancelled by the engine before it was offered (cancelled is the engine's
// reason), or refused because the executor is shutting down.
type unrun struct {
	task      *domain.Task
	cancelled string
}

// answer reports tasks received on a stream that the runtime will not run,
// in one delivery through the result sink, so that the engine learns of them
// at once: CANCELLED for those the engine cancelled, else a retryable FAILED
// SHUTDOWN, so that it runs them elsewhere without waiting for their
// timeouts. A task no result can name is only logged. The delivery is tried
// once, within answerTimeout: these tasks have no other owner to retry them,
// and the engine reassigns a task left unanswered after its timeout.
func (c pullConfig) answer(log *slog.Logger, tasks ...unrun) {
	var (
		results []domain.Result
		answers []string // "task id CODE", for the log line
	)
	now := time.Now().UTC()
	for _, u := range tasks {
		if !u.task.Addressable() || c.sink == nil {
			c.refusals.Log(log, slog.LevelWarn, "unanswerable", "task from the engine not run, and it cannot be answered",
				slog.String("run_id", domain.Clip(u.task.RunID, domain.QuoteBytes)), slog.String("node_id", domain.Clip(u.task.NodeID, domain.QuoteBytes)))
			continue
		}
		res := domain.ResultFor(u.task, domain.StatusFailed)
		res.Error = &domain.ErrorInfo{Code: domain.CodeShutdown, Message: "executor is shutting down; run the task elsewhere", Retryable: true}
		if u.cancelled != "" {
			res.Status, res.Error = domain.StatusCancelled, &domain.ErrorInfo{Code: domain.CodeCancelled, Message: u.cancelled}
		}
		res.ExecutorID = u.task.ExecutorID // the stream's executor, whose token carries the result
		res.CompletedAt = now
		results = append(results, res)
		answers = append(answers, domain.Clip(u.task.ID(), domain.QuoteBytes)+" "+res.Error.Code)
	}
	if len(results) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
	defer cancel()
	if err := c.sink.Deliver(ctx, results); err != nil {
		log.Error("tasks from the engine not run could not be answered; the engine reassigns them after their timeout",
			slog.Any("tasks", answers), slog.Any("error", err))
		return
	}
	log.Info("tasks from the engine answered without running", slog.Any("tasks", answers))
}

// streamDownGrace is how long a stream may be down before readiness says
// so: a stream the engine ends (a GOAWAY when it restarts or ages a
// connection out, a stream lifetime ending) is reopened at once, and
// readiness must not flap for that. streamProof is how long a stream must
// stay open, or the first message it must carry, before it counts as up:
// an engine that refuses a stream (a bad token, an unknown executor)
// accepts it first and ends it at once.
const (
	streamDownGrace = 5 * time.Second
	streamProof     = 250 * time.Millisecond
)

// streamState tracks whether each executor's stream is up, for readiness.
type streamState struct {
	mu      sync.Mutex
	streams map[string]*streamStatus // by executor id
}

type streamStatus struct {
	err error // why the stream is down; nil once it is up
	// downSince is when the stream went down after being up; zero for a
	// stream never up, which counts as down at once.
	downSince time.Time
	// openedAt is when the stream now open was opened; zero when none is.
	openedAt time.Time
}

func newStreamState(ids []string) *streamState {
	s := &streamState{streams: make(map[string]*streamStatus)}
	for _, id := range ids {
		s.streams[id] = &streamStatus{err: errors.New("not connected yet")}
	}
	return s
}

// opened records that id's stream was opened; it counts as up once proven.
func (s *streamState) opened(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[id].openedAt = time.Now()
}

// received records a message on id's stream: it is up.
func (s *streamState) received(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	st.err, st.downSince = nil, time.Time{}
}

// ended records that id's stream ended, with err. A normal end (nil) is
// the engine's own choice (Gamelan ends StreamTasks at once): the stream
// counts as up.
func (s *streamState) ended(id string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	s.proveLocked(st)
	st.openedAt = time.Time{}
	if err == nil {
		st.err, st.downSince = nil, time.Time{}
		return
	}
	if st.err == nil {
		st.downSince = time.Now()
	}
	st.err = err
}

// proveLocked marks a stream open for streamProof as up. Callers hold mu.
func (s *streamState) proveLocked(st *streamStatus) {
	if st.err != nil && !st.openedAt.IsZero() && time.Since(st.openedAt) >= streamProof {
		st.err, st.downSince = nil, time.Time{}
	}
}

// healthy reports the first executor whose stream was never up, or has
// been down for longer than streamDownGrace.
func (s *streamState) healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range s.streams {
		s.proveLocked(st)
		switch {
		case st.err == nil:
		case st.downSince.IsZero():
			return fmt.Errorf("stream for %s: %w", id, st.err)
		case time.Since(st.downSince) > streamDownGrace:
			return fmt.Errorf("stream for %s down for %s: %w", id, time.Since(st.downSince).Round(time.Second), st.err)
		}
	}
	return nil
}

// pullConfig is what the stream and bidi sources share.
type pullConfig struct {
	client gamelanv1.ExecutorServiceClient
	// executors are the types served over gRPC; each gets its own stream.
	executors []domain.Registration
	// reconnect paces reopening a stream that failed or ended with nothing.
	reconnect domain.Backoff
	// streamLifetime, when positive, reopens streams this often so that a
	// fresh token is presented (tokens are checked when a stream opens).
	streamLifetime time.Duration
	// sink answers tasks the runtime will not run (see answer).
	sink ports.ResultSink
	// maxMessageSize bounds a message sent on a stream.
	maxMessageSize int
	log            *slog.Logger
	// refusals throttles the log lines about refused tasks and failing
	// streams, which a hostile engine could otherwise repeat at will.
	refusals *telemetry.Throttle
	// suspect, when set, is told when the engine refuses a stream for an
	// executor it does not know (see ConnectionWatch).
	suspect func(reason string)
	// goaways remembers the GOAWAY reasons already logged.
	goaways *sync.Map
}

// puller keeps one engine stream per executor type open until Stop: it
// waits for room in the runtime, runs a session, and reopens the stream at
// once if the session delivered tasks, or after a jittered exponential
// backoff if it failed or ended empty (an engine that completes the stream
// at once is never polled in a hot loop). StreamSource and BidiSource are
// pullers with different sessions.
type puller struct {
	cfg    pullConfig
	intake string // "stream" or "bidi", for logs
	// session runs one stream for reg and returns how many tasks it
	// delivered and why it ended (nil for a normal end).
	session func(ctx context.Context, intake ports.Intake, reg domain.Registration, free int, log *slog.Logger) (int, error)
	state   *streamState

	mu     sync.Mutex
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func newPuller(cfg pullConfig, intake string) puller {
	ids := make([]string, len(cfg.executors))
	for i, reg := range cfg.executors {
		ids[i] = reg.ExecutorID
	}
	return puller{cfg: cfg, intake: intake, state: newStreamState(ids)}
}

// Start implements ports.TaskSource: one goroutine per executor type keeps
// its stream open until Stop. A ctx that has already ended fails Start, and
// nothing is started.
func (p *puller) Start(ctx context.Context, intake ports.Intake) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start %s source: %w", p.intake, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel != nil {
		return fmt.Errorf("%s source started twice", p.intake)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	for _, reg := range p.cfg.executors {
		p.done.Go(func() { p.loop(runCtx, intake, reg) })
	}
	return nil
}

// Stop implements ports.TaskSource: it closes the streams and waits for
// their goroutines, so that no Offer follows.
func (p *puller) Stop(context.Context) error {
	p.mu.Lock()
	cancel := p.cancel
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.done.Wait()
	return nil
}

// Close implements ports.TaskSource: it stops the source if it was not
// stopped. Streamed tasks carry no Settle (their results go through
// ReportResults), so there is nothing else to release.
func (p *puller) Close(ctx context.Context) error { return p.Stop(ctx) }

// Healthy implements ports.HealthReporter: every stream must be connected.
func (p *puller) Healthy() error { return p.state.healthy() }

func (p *puller) loop(ctx context.Context, intake ports.Intake, reg domain.Registration) {
	log := p.cfg.log.With(slog.String("executor_id", reg.ExecutorID), slog.String("intake", p.intake))
	for attempt := 0; ; {
		free, err := intake.AwaitCapacity(ctx)
		if err != nil {
			return // stopping or draining
		}
		delivered, err := p.session(ctx, intake, reg, free, log)
		if ctx.Err() != nil || errors.Is(err, domain.ErrDraining) {
			return
		}
		p.state.ended(reg.ExecutorID, err)
		if delivered > 0 {
			attempt = 0
		}
		if err == nil && delivered > 0 {
			continue // a normal end after work: reopen at once
		}
		if err != nil {
			p.streamFailed(reg, err, attempt, delivered, log)
		}
		if p.cfg.reconnect.Wait(ctx, attempt) != nil {
			return
		}
		attempt++
	}
}

// streamFailed reports a failed stream: a refusal naming the executor as
// unknown is a sign that the engine forgot it; a GOAWAY is logged once per
// reason (the stream reopens on a new connection); anything else is logged,
// throttled.
func (p *puller) streamFailed(reg domain.Registration, err error, attempt, delivered int, log *slog.Logger) {
	if isNotRegistered(err) && p.cfg.suspect != nil {
		p.cfg.suspect("the engine refused the stream of " + reg.ExecutorID + " as unknown")
	}
	if reason, ok := goawayReason(err); ok {
		if _, seen := p.cfg.goaways.LoadOrStore(reason, true); !seen {
			level, advice := slog.LevelInfo, "the stream is reopened on a new connection"
			if strings.Contains(reason, "too_many_pings") {
				level, advice = slog.LevelWarn, "the engine finds the keepalive pings too frequent: raise GRPC_KEEP_ALIVE_TIME_SECONDS to what the engine permits (default servers: 300)"
			}
			log.Log(context.Background(), level, "the engine closed the connection (GOAWAY)", slog.String("reason", reason), slog.String("advice", advice))
		}
		return
	}
	p.cfg.refusals.Log(log, slog.LevelWarn, "stream-"+reg.ExecutorID, "engine stream failed, reconnecting",
		slog.Int("attempt", attempt+1), slog.Int("tasks_delivered", delivered), slog.Any("error", err))
}

// goawayReason finds a GOAWAY in a stream's error: grpc-go reports one as
// "received prior goaway: code: ..., debug data: ...", and gRPC C-core ends
// the streams of a connection it closes for too many pings with the status
// "Too many pings".
func goawayReason(err error) (string, bool) {
	msg := err.Error()
	if _, reason, ok := strings.Cut(msg, "received prior goaway: "); ok {
		return reason, true
	}
	if strings.Contains(strings.ToLower(msg), "too many pings") {
		return `code: ENHANCE_YOUR_CALM, debug data: "too_many_pings"`, true
	}
	return "", false
}

// streamContext bounds a stream's life so that it is reopened with a fresh
// token (tokens are checked when a stream opens), and names the executor as
// the token's subject.
func (p *puller) streamContext(ctx context.Context, executorID string) (context.Context, context.CancelFunc) {
	ctx = security.WithSubject(ctx, executorID)
	if p.cfg.streamLifetime > 0 {
		return context.WithTimeout(ctx, p.cfg.streamLifetime)
	}
	return context.WithCancel(ctx)
}

// endOfStream classifies a Recv error: a normal end (EOF, or the stream's
// own lifetime ending) is nil.
func endOfStream(op string, ctx, streamCtx context.Context, err error) error {
	if errors.Is(err, io.EOF) || (streamCtx.Err() != nil && ctx.Err() == nil) {
		return nil
	}
	return callError(op, err)
}
