package app

import (
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// Observer is told what the runtime does, for metrics. Its methods are
// called on the runtime's hot paths, concurrently: they must be fast and
// must not block. Label values passed to it come from bounded sets
// (hosted executor types, transport names, the four statuses, the refusal
// reasons below).
type Observer interface {
	// TaskFinished reports one task's result and how long its handler ran.
	TaskFinished(executorType string, status domain.Status, duration time.Duration)
	// TaskRefused reports an Offer refused with reason "overloaded",
	// "rate_limited", "draining" or "invalid".
	TaskRefused(transport, reason string)
	// ResultsDelivered reports a batch acknowledged by the engine, with the
	// time from the oldest result's completion to the acknowledgement.
	ResultsDelivered(transport string, results int, latency time.Duration)
	// DeliveryRetried reports a failed Deliver call that will be retried.
	DeliveryRetried(transport string)
	// ResultsUndelivered reports results given up at shutdown.
	ResultsUndelivered(transport string, results int)
	// ResultDeadLettered reports a result the engine refused for good, even
	// in its minimal FAILED form: it was logged and dropped.
	ResultDeadLettered(transport string)
	// HandlerAbandoned reports a handler still running when its context
	// ended (deadline, cancellation, shutdown): its result was decided
	// without it.
	HandlerAbandoned(executorType string)
	// HeartbeatFailed and RegistrationFailed report failed control-plane calls.
	HeartbeatFailed(executorType string)
	RegistrationFailed(executorType string)
}

// nopObserver is the Observer used when none is configured.
type nopObserver struct{}

func (nopObserver) TaskFinished(string, domain.Status, time.Duration) {}
func (nopObserver) TaskRefused(string, string)                        {}
func (nopObserver) ResultsDelivered(string, int, time.Duration)       {}
func (nopObserver) DeliveryRetried(string)                            {}
func (nopObserver) ResultsUndelivered(string, int)                    {}
func (nopObserver) ResultDeadLettered(string)                         {}
func (nopObserver) HandlerAbandoned(string)                           {}
func (nopObserver) HeartbeatFailed(string)                            {}
func (nopObserver) RegistrationFailed(string)                         {}
