package kafka

import (
	"time"
)

// The JSON values on the Kafka topics (docs/protocol.md, section 4). Field names
// are Gamelan's; fields marked optional are ours, and a Gamelan engine
// omits or ignores them.

// TaskMessage is a task on the tasks topic (workflow.tasks).
type TaskMessage struct {
	RunID          string         `json:"runId"`
	NodeID         string         `json:"nodeId"`
	Attempt        int            `json:"attempt"`
	Token          string         `json:"token,omitempty"`
	Context        map[string]any `json:"context,omitempty"`
	TargetExecutor string         `json:"targetExecutor,omitempty"`

	// Optional fields of ours.
	TaskID         string     `json:"taskId,omitempty"`
	NodeType       string     `json:"nodeType,omitempty"`
	ExecutorType   string     `json:"executorType,omitempty"`
	TimeoutSeconds int64      `json:"timeoutSeconds,omitempty"`
	ScheduledAt    *time.Time `json:"scheduledAt,omitempty"`
	IdempotencyKey string     `json:"idempotencyKey,omitempty"`
}

// ResultMessage is a task's result on the results topic (workflow-results),
// keyed by run id.
type ResultMessage struct {
	RunID          string         `json:"runId"`
	NodeID         string         `json:"nodeId"`
	Attempt        int            `json:"attempt"`
	Status         string         `json:"status"`
	Output         map[string]any `json:"output"`
	Error          *ResultError   `json:"error"`
	ExecutionToken string         `json:"executionToken"`
	CompletedAt    time.Time      `json:"completedAt"`

	// Optional fields of ours.
	TaskID     string `json:"taskId,omitempty"`
	ExecutorID string `json:"executorId,omitempty"`
	DurationMs int64  `json:"durationMs,omitempty"`
	StackTrace string `json:"stackTrace,omitempty"`
}

// ResultError is the error of a failed result. Gamelan reads code and
// message; retryable and context are ours.
type ResultError struct {
	Code      string         `json:"code"`
	Message   string         `json:"message"`
	Retryable bool           `json:"retryable,omitempty"`
	Context   map[string]any `json:"context,omitempty"`
}

// RegistrationMessage announces an executor on the registrations topic,
// keyed by executor id.
type RegistrationMessage struct {
	ExecutorID         string            `json:"executorId"`
	ExecutorType       string            `json:"executorType"`
	CommunicationType  string            `json:"communicationType,omitempty"`
	SupportedTypes     []string          `json:"supportedTypes"`
	MaxConcurrentTasks int               `json:"maxConcurrentTasks"`
	Endpoint           string            `json:"endpoint"`
	Metadata           map[string]string `json:"metadata"`
	Timestamp          time.Time         `json:"timestamp"`
}

// HeartbeatMessage reports an executor's load on the heartbeats topic,
// keyed by executor id.
type HeartbeatMessage struct {
	ExecutorID       string          `json:"executorId"`
	CurrentTaskCount int             `json:"currentTaskCount"`
	Health           HeartbeatHealth `json:"health"`
	Timestamp        time.Time       `json:"timestamp"`
}

// HeartbeatHealth is the health part of a heartbeat.
type HeartbeatHealth struct {
	Status         string `json:"status"`
	CurrentTasks   int    `json:"currentTasks"`
	CompletedTasks int    `json:"completedTasks"`
	FailedTasks    int    `json:"failedTasks"`
	// Load is this service's addition (engines ignore fields they do not
	// know): how busy the type is, 0 to 1 (domain.Heartbeat.Load).
	Load float64 `json:"load"`
}

// UnregistrationMessage withdraws an executor on the unregistrations topic,
// keyed by executor id.
type UnregistrationMessage struct {
	ExecutorID string    `json:"executorId"`
	Timestamp  time.Time `json:"timestamp"`
}

// AuthorizationHeader is the record header carrying "Bearer <JWT>".
const AuthorizationHeader = "authorization"
