package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// intake is the runtime's ports.Intake for one transport: it tags each task
// with the transport whose sink will carry its result.
type intake struct {
	rt        *Runtime
	transport *transport
}

var _ ports.Intake = (*intake)(nil)

// Offer implements ports.Intake.
func (in *intake) Offer(_ context.Context, d ports.Delivery) error {
	r, tr := in.rt, in.transport
	if d.Task == nil {
		r.cfg.Observer.TaskRefused(tr.Name, "invalid")
		return fmt.Errorf("%w: no task", domain.ErrInvalidTask)
	}
	if r.draining.Load() {
		r.cfg.Observer.TaskRefused(tr.Name, "draining")
		return domain.ErrDraining
	}
	task := d.Task
	task.TakeTraceContext()
	spans := r.startTaskSpan(task, tr) // nil when tracing is off
	err := in.offer(d, spans)
	if err != nil && spans != nil {
		spans.refused(err)
	}
	return err
}

// offer is Offer for a task received while the runtime takes tasks, with
// its spans (nil when tracing is off).
func (in *intake) offer(d ports.Delivery, spans *jobSpans) error {
	r, tr, task := in.rt, in.transport, d.Task
	problem := task.Validate()
	if d.Malformed != nil {
		problem = fmt.Errorf("%w: %w", domain.ErrInvalidTask, d.Malformed)
	}
	if problem != nil && (d.Refusable || !task.Addressable()) {
		r.cfg.Observer.TaskRefused(tr.Name, "invalid")
		return problem
	}
	if tr.outbox.isFull() {
		r.cfg.Observer.TaskRefused(tr.Name, "overloaded")
		return fmt.Errorf("%w: %d results of transport %s wait for the engine's acknowledgement", domain.ErrOverloaded, tr.outbox.limit, tr.Name)
	}
	j := newJob(task, tr, d.Redeliverable)
	j.spans = spans
	var outcome offerOutcome
	var err error
	if problem != nil {
		// Answered FAILED INVALID_TASK, not run (see offerUntracked).
		if spans != nil {
			spans.admitted(nil)
		}
		outcome, err = r.tasks.offerUntracked(j, d.Settle, r.answerFor(task, domain.CodeInvalidTask, problem.Error()))
	} else {
		// Routed before the table's lock is taken: routing reads only what
		// New set up, and a duplicate's route is simply not used.
		e, reason := r.route(task, tr)
		var answer *domain.Result
		if e == nil {
			answer = r.answerFor(task, domain.CodeNoExecutor, reason)
		}
		if e != nil && e.rate != nil {
			return in.offerLimited(j, d, e, spans)
		}
		if spans != nil {
			spans.admitted(e)
		}
		outcome, err = r.tasks.offer(j, d.Settle, e, answer)
	}
	return in.outcome(outcome, err, spans)
}

// offerLimited admits a routed task of a rate-limited type: it takes a
// token first, refusing the task when none is free, and gives the token
// back when the task does not run after all (a duplicate joined to the
// task in flight or answered with its stored result, a task refused for
// room), so that only tasks that run use the type's rate.
func (in *intake) offerLimited(j *job, d ports.Delivery, e *hostedExecutor, spans *jobSpans) error {
	r, tr := in.rt, in.transport
	now := time.Now()
	res, limited := e.rate.take(now)
	if limited != nil {
		r.cfg.Observer.TaskRefused(tr.Name, "rate_limited")
		return limited
	}
	if spans != nil {
		spans.admitted(e)
	}
	outcome, err := r.tasks.offer(j, d.Settle, e, nil)
	// j.exec is set, before the job is admitted and never after, only
	// when the job will run its handler: not for a duplicate answered
	// with its stored result or a task of a stalled type.
	if err == nil && outcome == admitted && j.exec != nil {
		e.rate.kept()
	} else {
		e.rate.giveBack(res, now)
	}
	return in.outcome(outcome, err, spans)
}

// outcome turns the task table's answer to an offer into Offer's error.
func (in *intake) outcome(outcome offerOutcome, err error, spans *jobSpans) error {
	r, tr := in.rt, in.transport
	if outcome == joined && spans != nil {
		spans.joined()
	}
	switch {
	case err != nil:
		r.log.Error("task not admitted: a bug in the runtime", slog.Any("error", err))
		return err
	case outcome == refused && r.draining.Load():
		r.cfg.Observer.TaskRefused(tr.Name, "draining")
		return domain.ErrDraining
	case outcome == refused:
		r.cfg.Observer.TaskRefused(tr.Name, "overloaded")
		return fmt.Errorf("%w: %d tasks admitted", domain.ErrOverloaded, r.sched.limit)
	}
	return nil // admitted, or joined to the same task in flight: not run twice
}

// answerFor returns a FAILED result for a task answered without running,
// from the executor the task was sent to when that one is hosted here.
func (r *Runtime) answerFor(task *domain.Task, code, message string) *domain.Result {
	res := failedResult(task, &domain.ErrorInfo{Code: code, Message: domain.Clip(message, domain.MaxErrorMessageBytes)})
	if r.byID[task.ExecutorID] != nil {
		res.ExecutorID = task.ExecutorID
	}
	return &res
}

// AwaitCapacity implements ports.Intake: it waits until the runtime has room
// for a task and this transport's results are not backed up.
func (in *intake) AwaitCapacity(ctx context.Context) (int, error) {
	for {
		if full, drained := in.transport.outbox.full(); full {
			select {
			case <-drained:
			case <-in.rt.sched.draining:
				return 0, domain.ErrDraining
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			}
			continue
		}
		free, err := in.rt.sched.awaitRoom(ctx)
		if err != nil {
			return 0, err
		}
		if room := in.transport.outbox.room(); room > 0 {
			return min(free, room), nil
		}
	}
}

// Cancel implements ports.Intake.
func (in *intake) Cancel(taskID, reason string) bool {
	r := in.rt
	if reason == "" {
		reason = "cancelled by the engine"
	}
	cause := &domain.Error{Code: domain.CodeCancelled, Message: domain.Clip(reason, domain.MaxErrorMessageBytes)}
	return r.tasks.cancel(taskID, cause)
}

// route picks the executor for a valid task, or explains why none may run
// it. One rule for every transport:
//
//  1. The task's declared types decide: its executor type, else its node
//     type, else its context's __node_type__. The executor chosen must
//     support every type the task declares: a handler never receives a task
//     of a type it does not declare.
//  2. The executor id the task was sent to (a push signature, the stream it
//     came on, a Kafka target) is a hint: used when the task declares no
//     type, or when it agrees with the declared types (of several executors
//     supporting a node type, the engine's choice wins). An executor id that
//     contradicts the declared types is an answer: NO_EXECUTOR, naming both.
//     An executor id not hosted here is ignored.
//  3. With neither, a node id equal to a supported node type, else the only
//     type the task's transport serves.
//
// Routing runs for every task: the buffers below live on the stack, so that
// it allocates nothing unless it explains a refusal.
func (r *Runtime) route(t *domain.Task, tr *transport) (*hostedExecutor, string) {
	hint := r.byID[t.ExecutorID]
	declared := declaredTypes(t, make([]declaredType, 0, 3))
	if len(declared) == 0 {
		switch {
		case hint != nil:
			return hint, ""
		case r.supporting(t.NodeID) != nil:
			return r.supporting(t.NodeID), ""
		case len(tr.executors) == 1:
			return tr.executors[0], ""
		}
		return nil, fmt.Sprintf("the task declares no executor type or node type, node id %s is not a supported node type, and transport %s serves %d executor types",
			domain.Quote(t.NodeID), tr.Name, len(tr.executors))
	}
	if hint != nil {
		for _, d := range declared {
			if !d.supportedBy(hint) {
				return nil, fmt.Sprintf("the task declares %s %s, but it was sent to executor %s of type %s, which does not support it",
					d.field, domain.Quote(d.value), hint.reg.ExecutorID, hint.desc.Type)
			}
		}
		return hint, ""
	}
	first := declared[0]
	var candidates []*hostedExecutor
	if first.field == executorTypeField {
		if e := r.byType[first.value]; e != nil {
			candidates = append(make([]*hostedExecutor, 0, 1), e)
		}
	} else {
		candidates = r.supportingAll(first.value, make([]*hostedExecutor, 0, 4))
	}
	if len(candidates) == 0 {
		if first.field == executorTypeField {
			return nil, fmt.Sprintf("executor type %s is not hosted here", domain.Quote(first.value))
		}
		return nil, fmt.Sprintf("no hosted executor supports %s %s", first.field, domain.Quote(first.value))
	}
	for _, e := range candidates {
		if supportsAll(e, declared) {
			return e, ""
		}
	}
	names := make([]string, len(declared))
	for i, d := range declared {
		names[i] = d.field + " " + domain.Quote(d.value)
	}
	return nil, fmt.Sprintf("the task declares %s, which no hosted executor type supports together", strings.Join(names, " and "))
}

// supportsAll reports whether e supports every declared type.
func supportsAll(e *hostedExecutor, declared []declaredType) bool {
	for _, d := range declared {
		if !d.supportedBy(e) {
			return false
		}
	}
	return true
}

// declaredType is one type a task declares, and the field that declares it.
type declaredType struct{ field, value string }

// executorTypeField names the field that declares an executor type.
const executorTypeField = "executor type"

// supportedBy reports whether e may run a task declaring d: an executor
// type must be e's own, a node type one e supports.
func (d declaredType) supportedBy(e *hostedExecutor) bool {
	if d.field == executorTypeField {
		return d.value == e.desc.Type
	}
	return e.desc.Supports(d.value)
}

// declaredTypes appends to declared the types a task declares, most
// specific first, and returns it.
func declaredTypes(t *domain.Task, declared []declaredType) []declaredType {
	if t.ExecutorType != "" {
		declared = append(declared, declaredType{executorTypeField, t.ExecutorType})
	}
	if t.NodeType != "" {
		declared = append(declared, declaredType{"node type", t.NodeType})
	}
	if nodeType, _ := t.Context[domain.NodeTypeKey].(string); nodeType != "" {
		declared = append(declared, declaredType{"context " + domain.NodeTypeKey, nodeType})
	}
	return declared
}

// supporting returns the executor of that type, else the first that lists
// it among its supported node types.
func (r *Runtime) supporting(nodeType string) *hostedExecutor {
	if e := r.byType[nodeType]; e != nil {
		return e
	}
	for _, e := range r.executors {
		if e.desc.Supports(nodeType) {
			return e
		}
	}
	return nil
}

// supportingAll appends to all the executors supporting a node type, the
// one of that type first, then those listing it, in hosting order, and
// returns it.
func (r *Runtime) supportingAll(nodeType string, all []*hostedExecutor) []*hostedExecutor {
	if e := r.byType[nodeType]; e != nil {
		all = append(all, e)
	}
	for _, e := range r.executors {
		if e.desc.Type != nodeType && e.desc.Supports(nodeType) {
			all = append(all, e)
		}
	}
	return all
}
