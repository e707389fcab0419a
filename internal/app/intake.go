package app

import (
	"context"
	"fmt"

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
	r := in.rt
	if d.Task == nil {
		r.cfg.Observer.TaskRefused(in.transport.Name, "invalid")
		return fmt.Errorf("%w: no task", domain.ErrInvalidTask)
	}
	if r.draining.Load() {
		r.cfg.Observer.TaskRefused(in.transport.Name, "draining")
		return domain.ErrDraining
	}
	if err := d.Task.Validate(); err != nil {
		r.cfg.Observer.TaskRefused(in.transport.Name, "invalid")
		return err
	}
	task := d.Task
	key := task.Key()

	r.tasks.mu.Lock()
	defer r.tasks.mu.Unlock()
	if j := r.tasks.active[key]; j != nil {
		// A duplicate of a task in flight: not run twice; settled with the original.
		j.settles = append(j.settles, d.Settle)
		return nil
	}
	j := &job{key: key, task: task, transport: in.transport, redeliverable: d.Redeliverable, settles: []func(error){d.Settle}}
	if res, ok := r.tasks.finished.get(key); ok {
		// The same result, addressed to this delivery: an engine that
		// re-dispatched the attempt may have given it a new token.
		stamp(&res, task)
		j.answer, j.resend = &res, true
	} else if e, reason := r.route(task, in.transport); e != nil {
		j.exec, j.lane = e, e.lane
	} else {
		res := failedResult(task, &domain.ErrorInfo{Code: domain.CodeNoExecutor, Message: reason})
		j.answer = &res
	}
	if !r.sched.admit(j) {
		if r.draining.Load() {
			r.cfg.Observer.TaskRefused(in.transport.Name, "draining")
			return domain.ErrDraining
		}
		r.cfg.Observer.TaskRefused(in.transport.Name, "overloaded")
		return fmt.Errorf("%w: %d tasks admitted", domain.ErrOverloaded, r.sched.limit)
	}
	if !j.resend {
		r.tasks.add(j)
	}
	return nil
}

// AwaitCapacity implements ports.Intake.
func (in *intake) AwaitCapacity(ctx context.Context) (int, error) {
	return in.rt.sched.awaitRoom(ctx)
}

// Cancel implements ports.Intake.
func (in *intake) Cancel(taskID, reason string) bool {
	r := in.rt
	if reason == "" {
		reason = "cancelled by the engine"
	}
	cause := &domain.Error{Code: domain.CodeCancelled, Message: reason}

	r.tasks.mu.Lock()
	defer r.tasks.mu.Unlock()
	j := r.tasks.lookup(taskID)
	if j == nil || j.finished || (j.answer != nil && !j.running) {
		return false // unknown, finished, or already answered (no executor, shutdown)
	}
	if j.running {
		j.cancel(cause)
		return true
	}
	if j.answer == nil {
		res := failedResult(j.task, errorInfo(cause))
		j.answer = &res
		r.sched.expedite(j) // if a worker already took it, the worker sees the answer
	}
	return true
}

// route picks the executor for a task, or explains why none fits. Each rule
// applies only when its field is present, and a named type that is not
// hosted is an answer, not a reason to guess:
// executor id, executor type, node type, context.__node_type__, a node id
// equal to a supported node type, the only type served by the transport.
func (r *Runtime) route(t *domain.Task, tr *transport) (*hostedExecutor, string) {
	if e := r.byID[t.ExecutorID]; e != nil {
		return e, ""
	}
	if t.ExecutorType != "" {
		if e := r.byType[t.ExecutorType]; e != nil {
			return e, ""
		}
		return nil, fmt.Sprintf("executor type %q is not hosted here", t.ExecutorType)
	}
	nodeType, field := t.NodeType, "node type"
	if nodeType == "" {
		nodeType, _ = t.Context[domain.NodeTypeKey].(string)
		field = "context " + domain.NodeTypeKey
	}
	if nodeType != "" {
		if e := r.supporting(nodeType); e != nil {
			return e, ""
		}
		return nil, fmt.Sprintf("no hosted executor supports %s %q", field, nodeType)
	}
	if e := r.supporting(t.NodeID); e != nil {
		return e, ""
	}
	if len(tr.executors) == 1 {
		return tr.executors[0], ""
	}
	return nil, fmt.Sprintf("task names no executor type or node type, node id %q is not a supported node type, and transport %s serves %d executor types",
		t.NodeID, tr.Name, len(tr.executors))
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
