package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

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
	problem := task.Validate()
	if d.Malformed != nil {
		problem = fmt.Errorf("%w: %w", domain.ErrInvalidTask, d.Malformed)
	}
	if problem != nil && (d.Refusable || !task.Addressable()) {
		r.cfg.Observer.TaskRefused(tr.Name, "invalid")
		return problem
	}
	if full, _ := tr.outbox.full(); full {
		r.cfg.Observer.TaskRefused(tr.Name, "overloaded")
		return fmt.Errorf("%w: %d results of transport %s wait for the engine's acknowledgement", domain.ErrOverloaded, tr.outbox.limit, tr.Name)
	}
	j := &job{key: task.Key(), task: task, transport: tr, redeliverable: d.Redeliverable}
	var outcome offerOutcome
	var err error
	if problem != nil {
		// Answered FAILED INVALID_TASK, not run (see offerUntracked).
		outcome, err = r.tasks.offerUntracked(j, d.Settle, r.answerFor(task, domain.CodeInvalidTask, problem.Error()))
	} else {
		outcome, err = r.tasks.offer(j, d.Settle, func() (*hostedExecutor, *domain.Result) { return r.assign(task, tr) })
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

// assign picks the executor for a valid task that is neither in flight nor
// finished, or its answer: NO_EXECUTOR, or HANDLERS_STALLED while every slot
// of its type is held by a handler that ignored its deadline.
func (r *Runtime) assign(task *domain.Task, tr *transport) (*hostedExecutor, *domain.Result) {
	e, reason := r.route(task, tr)
	switch {
	case e == nil:
		return nil, r.answerFor(task, domain.CodeNoExecutor, reason)
	case r.sched.stalled(e.lane):
		return nil, stalledAnswer(task, e)
	}
	return e, nil
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
func (r *Runtime) route(t *domain.Task, tr *transport) (*hostedExecutor, string) {
	hint := r.byID[t.ExecutorID]
	declared := declaredTypes(t)
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
	candidates := r.supportingAll(first.value)
	if first.field == "executor type" {
		candidates = nil
		if e := r.byType[first.value]; e != nil {
			candidates = []*hostedExecutor{e}
		}
	}
	if len(candidates) == 0 {
		if first.field == "executor type" {
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

// supportedBy reports whether e may run a task declaring d: an executor
// type must be e's own, a node type one e supports.
func (d declaredType) supportedBy(e *hostedExecutor) bool {
	if d.field == "executor type" {
		return d.value == e.desc.Type
	}
	return e.desc.Supports(d.value)
}

// declaredTypes returns the types a task declares, most specific first.
func declaredTypes(t *domain.Task) []declaredType {
	var declared []declaredType
	if t.ExecutorType != "" {
		declared = append(declared, declaredType{"executor type", t.ExecutorType})
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
	if all := r.supportingAll(nodeType); len(all) > 0 {
		return all[0]
	}
	return nil
}

// supportingAll returns the executors supporting a node type: the one of
// that type first, then those listing it, in hosting order.
func (r *Runtime) supportingAll(nodeType string) []*hostedExecutor {
	var all []*hostedExecutor
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
