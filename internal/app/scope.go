package app

import (
	"context"

	"github.com/gamelan-go/executor/internal/domain"
)

// handlerScope is the context a handler runs under: its parent's, plus the
// task's domain.TaskScope, which executor.Logger reads. It answers
// domain.TaskScopeKey itself and leaves every other key, and Done, Err and
// Deadline, to its parent, so a handler's context behaves as its parent
// does (a child made of it still joins the parent's cancellation without a
// goroutine).
//
// A worker's handlerScope lives in the job (job.scope) and holds only the
// job: the task costs no allocation more for it, and the TaskScope is made
// when a handler asks for its logger, as most never do.
type handlerScope struct {
	context.Context
	job *job
}

// Value implements context.Context.
func (s *handlerScope) Value(key any) any {
	if _, ok := key.(domain.TaskScopeKey); ok {
		j := s.job
		return &domain.TaskScope{Task: j.task, TaskID: j.id, ExecutorType: j.exec.desc.Type, Log: j.exec.log}
	}
	return s.Context.Value(key)
}
