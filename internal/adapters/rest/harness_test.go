package rest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
)

// The shared pieces of the adapter's tests: clients of a resttest
// registry, the conversion of what the registry stored back to a
// registration, REST intakes on 127.0.0.1 and an engine-side dispatcher
// posting tasks to them.

// waitTimeout bounds every wait for a condition.
const waitTimeout = 10 * time.Second

// fastBackoff paces the retries of test clients.
var fastBackoff = domain.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 2}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a client of baseURL with fast retries; configure
// adjusts its configuration first.
func newClient(t *testing.T, baseURL string, configure ...func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{BaseURL: baseURL, Timeout: 5 * time.Second, Backoff: fastBackoff}
	for _, c := range configure {
		c(&cfg)
	}
	client, err := NewClient(cfg)
	require.NoError(t, err)
	return client
}

// registrationOf decodes what the registry stored back into a registration:
// the metadata carries the supported node types and the max concurrent
// tasks (the wire has no fields for them).
func registrationOf(info resttest.ExecutorInfo) domain.Registration {
	reg := domain.Registration{
		ExecutorID:        info.ExecutorID,
		Descriptor:        domain.Descriptor{Type: info.ExecutorType},
		CommunicationType: domain.CommunicationType(info.CommunicationType),
		Endpoint:          info.Endpoint,
		Metadata:          info.Metadata,
	}
	if types := info.Metadata[MetadataSupportedNodeTypes]; types != "" {
		reg.Descriptor.SupportedNodeTypes = strings.Split(types, ",")
	}
	reg.Descriptor.MaxConcurrentTasks, _ = strconv.Atoi(info.Metadata[MetadataMaxConcurrentTasks])
	return reg
}

// testLogger logs to the test when it runs verbosely.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// The executor the REST intakes of the tests host, matching the tasks of
// the porttest suite.
const (
	taxExecutorID   = "tax-service-tax-calculator"
	taxExecutorType = "tax-calculator"
)

func taxRegistration() domain.Registration {
	return domain.Registration{
		ExecutorID:        taxExecutorID,
		Descriptor:        domain.Descriptor{Type: taxExecutorType, CommunicationType: domain.CommunicationREST},
		CommunicationType: domain.CommunicationREST,
	}
}

// newIntake starts a REST intake on a free port of 127.0.0.1 hosting the
// tax executor unless cfg names executors, and closes it when the test ends.
func newIntake(t *testing.T, cfg IntakeConfig) *Intake {
	t.Helper()
	cfg.Address = "127.0.0.1:0"
	if cfg.Executors == nil {
		cfg.Executors = []domain.Registration{taxRegistration()}
	}
	intake, err := NewIntake(cfg, testLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = intake.Close(ctx) // requests still in progress at the end of a test are cut short
	})
	return intake
}

// endpoint is the URL the intake would be registered with.
func endpoint(in *Intake) string { return "http://" + in.Addr().String() + TaskPath }

// taskPost is task as Gamelan's REST dispatcher posts it: identity in the
// headers and, withBody, the rest in a JSON body.
func taskPost(t *testing.T, task domain.Task, withBody bool) resttest.TaskPost {
	t.Helper()
	post := resttest.TaskPost{
		ExecutorID: task.ExecutorID, RunID: task.RunID, NodeID: task.NodeID, Attempt: task.Attempt,
		IdempotencyKey: task.IdempotencyKey, Signature: "signature-of-" + task.RunID,
	}
	if withBody {
		body, err := json.Marshal(map[string]any{
			"context":        task.Context,
			"configuration":  task.Configuration,
			"taskId":         task.TaskID,
			"nodeName":       task.NodeName,
			"nodeType":       task.NodeType,
			"executorType":   task.ExecutorType,
			"token":          task.ExecutionToken,
			"timeoutSeconds": int64(task.Timeout / time.Second),
		})
		require.NoError(t, err)
		post.Body = body
	}
	return post
}

// pushRetry paces a dispatcher's retries of a refused (503) task.
var pushRetry = domain.Backoff{Initial: 2 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2}

// dispatcher posts tasks in the background, retrying each while the intake
// answers 503 or cannot be reached, until it gets another answer or the
// test ends; the test's cleanup waits for every post.
type dispatcher struct {
	ctx      context.Context
	endpoint string
	wg       sync.WaitGroup

	mu      sync.Mutex
	answers []resttest.Answer
}

func newDispatcher(t *testing.T, endpoint string) *dispatcher {
	d := &dispatcher{ctx: t.Context(), endpoint: endpoint}
	t.Cleanup(d.wg.Wait)
	return d
}

func (d *dispatcher) post(p resttest.TaskPost) {
	d.wg.Go(func() {
		for attempt := 0; ; attempt++ {
			answer, err := resttest.PostTask(d.ctx, nil, d.endpoint, p)
			if err == nil && answer.Status != http.StatusServiceUnavailable {
				d.mu.Lock()
				d.answers = append(d.answers, answer)
				d.mu.Unlock()
				return
			}
			if pushRetry.Wait(d.ctx, attempt) != nil {
				return
			}
		}
	})
}
