package rest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
)

func TestRegisterSendsExecutorInfo(t *testing.T) {
	registry := resttest.Start(t)
	registrar := NewRegistrar(newClient(t, registry.URL()), 90*time.Second)
	require.NoError(t, registrar.Register(testContext(t), reg("tax-1")))

	info, ok := registry.Executor("tax-1")
	require.True(t, ok)
	assert.Equal(t, resttest.ExecutorInfo{
		ExecutorID: "tax-1", ExecutorType: "calculate-tax", CommunicationType: "KAFKA",
		Endpoint: "workflow.tasks", Timeout: 90,
		Metadata: map[string]string{
			"name": "tax-service", "host": "tax-0",
			// No version in the registration's metadata: the descriptor's.
			"version":            "2.0.0",
			"supportedNodeTypes": "tax,vat",
			"maxConcurrentTasks": "7",
		},
	}, info)

	// The registration's own version (the service's) wins over the
	// descriptor's.
	withVersion := reg("tax-1")
	withVersion.Metadata["version"] = "9.9.9"
	withVersion.CommunicationType = domain.CommunicationREST
	withVersion.Endpoint = "http://tax-0:8081/api/v1/tasks"
	require.NoError(t, registrar.Register(testContext(t), withVersion))
	info, _ = registry.Executor("tax-1")
	assert.Equal(t, "9.9.9", info.Metadata["version"])
	assert.Equal(t, "REST", info.CommunicationType)
	assert.Equal(t, "http://tax-0:8081/api/v1/tasks", info.Endpoint)
	assert.Equal(t, 2, registry.RegisterCalls("tax-1"))
	assert.Len(t, registry.Executors(), 1, "registering again replaces")
}

func TestUnregister(t *testing.T) {
	registry := resttest.Start(t)
	registrar := NewRegistrar(newClient(t, registry.URL()), time.Minute)
	require.NoError(t, registrar.Register(testContext(t), reg("tax-1")))
	require.NoError(t, registrar.Unregister(testContext(t), "tax-1"))
	require.NoError(t, registrar.Unregister(testContext(t), "tax-1"), "an executor the engine does not know")
	assert.Equal(t, []string{
		"POST /api/v1/executors 200",
		"DELETE /api/v1/executors/tax-1 204",
		"DELETE /api/v1/executors/tax-1 404",
	}, statuses(registry.Requests()))

	registry.FailNext(10, http.StatusInternalServerError)
	err := registrar.Unregister(testContext(t), "tax-1")
	var statusErr *StatusError
	require.ErrorAs(t, err, &statusErr, "a failure other than 404 is reported")
	assert.ErrorContains(t, err, "unregister tax-1")
}

func TestHeartbeatAnswered404Or410MeansNotRegistered(t *testing.T) {
	for _, status := range []int{http.StatusNotFound, http.StatusGone} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			registry := resttest.Start(t)
			client := newClient(t, registry.URL())
			require.NoError(t, NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1")))
			registry.FailHeartbeats(status)

			err := NewHeartbeater(client).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "tax-1"})
			require.ErrorIs(t, err, domain.ErrNotRegistered)
			var statusErr *StatusError
			require.ErrorAs(t, err, &statusErr, "the answer stays in the chain")
			assert.Equal(t, status, statusErr.Status)
			assert.ErrorContains(t, err, "heartbeat tax-1")
			assert.Equal(t, []string{
				"POST /api/v1/executors 200",
				fmt.Sprintf("POST /api/v1/executors/tax-1/heartbeat %d", status),
			}, statuses(registry.Requests()), "not retried, and no lookup after a refused heartbeat")
		})
	}
}

func TestHeartbeatServerErrorIsNotNotRegistered(t *testing.T) {
	registry := resttest.Start(t)
	client := newClient(t, registry.URL())
	require.NoError(t, NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1")))
	registry.FailHeartbeats(http.StatusInternalServerError)

	err := NewHeartbeater(client).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "tax-1"})
	require.Error(t, err)
	assert.NotErrorIs(t, err, domain.ErrNotRegistered, "an engine failure says nothing about the registration")
	assert.Len(t, registry.Requests(), 1+3, "the registration, then three heartbeat attempts")
}

// TestHeartbeatOfAForgottenExecutorInGamelanMode: the Gamelan engine answers
// 200 to the heartbeat of an executor it forgot; the lookup that follows
// answers 404, and that is what reports it.
func TestHeartbeatOfAForgottenExecutorInGamelanMode(t *testing.T) {
	registry := resttest.Start(t, resttest.GamelanMode())
	client := newClient(t, registry.URL())
	heartbeater := NewHeartbeater(client)
	require.NoError(t, NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1")))
	require.NoError(t, heartbeater.Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "tax-1"}))

	registry.Forget("tax-1")
	err := heartbeater.Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "tax-1"})
	require.ErrorIs(t, err, domain.ErrNotRegistered)
	assert.ErrorContains(t, err, "look up tax-1")
	assert.Equal(t, []string{
		"POST /api/v1/executors 200",
		"POST /api/v1/executors/tax-1/heartbeat 200",
		"GET /api/v1/executors/tax-1 200",
		"POST /api/v1/executors/tax-1/heartbeat 200",
		"GET /api/v1/executors/tax-1 404",
	}, statuses(registry.Requests()))
}

func TestHeartbeatEscapesTheExecutorID(t *testing.T) {
	registry := resttest.Start(t)
	client := newClient(t, registry.URL())
	odd := "tax 1/é"
	require.NoError(t, NewRegistrar(client, time.Minute).Register(testContext(t), reg(odd)))
	require.NoError(t, NewHeartbeater(client).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: odd}))
	assert.Len(t, registry.Heartbeats(odd), 1)
	require.NoError(t, NewRegistrar(client, time.Minute).Unregister(testContext(t), odd))
	assert.Empty(t, registry.Executors())
}

// An engine that forgot an executor may answer its look-up with 200 and
// nothing in it (an empty body, null, {}) or another executor: that is
// "forgotten" too, and the runtime registers again, instead of trusting a
// heartbeat the engine answers for any executor.
func TestHeartbeatWithAnEmptyLookUpMeansNotRegistered(t *testing.T) {
	for name, body := range map[string]string{
		"empty body":       "",
		"null":             "null",
		"empty object":     "{}",
		"another executor": `{"executorId": "tax-2"}`,
	} {
		t.Run(name, func(t *testing.T) {
			engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.Method == http.MethodGet {
					_, _ = w.Write([]byte(body))
				}
			}))
			t.Cleanup(engine.Close)
			err := NewHeartbeater(newClient(t, engine.URL)).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "tax-1"})
			require.ErrorIs(t, err, domain.ErrNotRegistered)
			assert.ErrorContains(t, err, "look up tax-1")
		})
	}
	known := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"executorId": "tax-1"}`))
	}))
	t.Cleanup(known.Close)
	require.NoError(t, NewHeartbeater(newClient(t, known.URL)).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "tax-1"}))
}
