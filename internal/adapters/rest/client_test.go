package rest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

// reg is a registration every field of which the registry shows.
func reg(id string) domain.Registration {
	return domain.Registration{
		ExecutorID: id,
		Descriptor: domain.Descriptor{
			Type: "calculate-tax", CommunicationType: domain.CommunicationKafka,
			MaxConcurrentTasks: 7, SupportedNodeTypes: []string{"tax", "vat"}, Version: "2.0.0",
		},
		CommunicationType: domain.CommunicationKafka,
		Endpoint:          "workflow.tasks",
		Metadata:          map[string]string{"name": "tax-service", "host": "tax-0"},
	}
}

// statuses returns the method, path and status of every request, for
// comparisons and failure messages.
func statuses(requests []resttest.Request) []string {
	out := make([]string, len(requests))
	for i, r := range requests {
		out[i] = fmt.Sprintf("%s %s %d", r.Method, r.Path, r.Status)
	}
	return out
}

func TestClientRetriesServerErrorsThenSucceeds(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			registry := resttest.Start(t)
			registry.FailNext(2, status)
			registrar := NewRegistrar(newClient(t, registry.URL()), time.Minute)
			require.NoError(t, registrar.Register(testContext(t), reg("tax-1")))

			want := []string{
				fmt.Sprintf("POST /api/v1/executors %d", status),
				fmt.Sprintf("POST /api/v1/executors %d", status),
				"POST /api/v1/executors 200",
			}
			assert.Equal(t, want, statuses(registry.Requests()))
			_, ok := registry.Executor("tax-1")
			assert.True(t, ok, "registered after the retries")
		})
	}
}

func TestClientGivesUpAfterAttempts(t *testing.T) {
	registry := resttest.Start(t)
	registry.FailNext(10, http.StatusInternalServerError)
	client := newClient(t, registry.URL(), func(c *ClientConfig) { c.Attempts = 4 })
	err := NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1"))

	var statusErr *StatusError
	require.ErrorAs(t, err, &statusErr)
	assert.Equal(t, http.StatusInternalServerError, statusErr.Status)
	assert.Len(t, registry.Requests(), 4, "attempts")
	assert.ErrorContains(t, err, "register tax-1")
}

func TestClientDoesNotRetryClientErrors(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusConflict} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			registry := resttest.Start(t)
			registry.FailNext(5, status)
			err := NewRegistrar(newClient(t, registry.URL()), time.Minute).Register(testContext(t), reg("tax-1"))
			var statusErr *StatusError
			require.ErrorAs(t, err, &statusErr)
			assert.Equal(t, status, statusErr.Status)
			assert.Len(t, registry.Requests(), 1, "a %d is not retried", status)
		})
	}
}

func TestClientDoesNotRetryALookupOfAnUnknownExecutor(t *testing.T) {
	registry := resttest.Start(t, resttest.GamelanMode())
	err := NewHeartbeater(newClient(t, registry.URL())).Heartbeat(testContext(t), domain.Heartbeat{ExecutorID: "nobody"})
	require.ErrorIs(t, err, domain.ErrNotRegistered)
	assert.Equal(t, []string{
		"POST /api/v1/executors/nobody/heartbeat 200",
		"GET /api/v1/executors/nobody 404",
	}, statuses(registry.Requests()))
}

// failureSignal is a transport that reports its first failed round trip.
type failureSignal struct {
	next     http.RoundTripper
	failures atomic.Int32
	failed   chan struct{} // closed at the first failure
}

func (f *failureSignal) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err != nil && f.failures.Add(1) == 1 {
		close(f.failed)
	}
	return resp, err
}

func TestClientRetriesNetworkErrorsThenSucceeds(t *testing.T) {
	registry := resttest.Start(t)
	registry.Stop()
	transport := &failureSignal{next: &http.Transport{}, failed: make(chan struct{})}
	client := newClient(t, registry.URL(), func(c *ClientConfig) {
		c.Transport = transport
		c.Attempts = 100
		c.Backoff = domain.Backoff{Initial: 20 * time.Millisecond, Multiplier: 1}
	})

	registered := make(chan error, 1)
	go func() { registered <- NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1")) }()
	select {
	case <-transport.failed:
	case <-time.After(waitTimeout):
		t.Fatal("the registrar never tried the stopped registry")
	}
	registry.Restart(t)
	select {
	case err := <-registered:
		require.NoError(t, err, "Register once the registry is back")
	case <-time.After(waitTimeout):
		t.Fatal("Register did not return after the registry came back")
	}
	assert.GreaterOrEqual(t, transport.failures.Load(), int32(1), "connection failures retried")
	assert.Equal(t, 1, registry.RegisterCalls("tax-1"))
}

func TestClientTimesOutAHungRequest(t *testing.T) {
	registry := resttest.Start(t)
	registry.Hang(time.Hour)
	client := newClient(t, registry.URL(), func(c *ClientConfig) {
		c.Timeout = 100 * time.Millisecond
		c.Attempts = 2
	})
	start := time.Now()
	err := NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1"))
	elapsed := time.Since(start)

	require.Error(t, err)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr, "%v", err)
	assert.True(t, netErr.Timeout(), "a timeout: %v", err)
	assert.Less(t, elapsed, 2*time.Second, "two attempts of 100ms")
	require.NoError(t, registry.WaitFor(testContext(t), func() bool {
		requests := registry.Requests()
		return len(requests) == 2 && requests[0].Abandoned() && requests[1].Abandoned()
	}), "a timed-out request is retried once, then given up: %v", statuses(registry.Requests()))
}

func TestClientStopsAtTheCallersDeadline(t *testing.T) {
	registry := resttest.Start(t)
	registry.Hang(time.Hour)
	ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := NewRegistrar(newClient(t, registry.URL()), time.Minute).Register(ctx, reg("tax-1"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Len(t, registry.Requests(), 1, "not retried once the caller's deadline passed")
}

func TestClientErrorQuotesStatusAndBoundedBody(t *testing.T) {
	registry := resttest.Start(t)
	body := strings.Repeat("é", 100) + strings.Repeat("x", 600) + "TAIL"
	registry.FailNextWithBody(1, http.StatusBadRequest, body)
	err := NewRegistrar(newClient(t, registry.URL()), time.Minute).Register(testContext(t), reg("tax-1"))

	var statusErr *StatusError
	require.ErrorAs(t, err, &statusErr)
	assert.Equal(t, http.StatusBadRequest, statusErr.Status)
	assert.Equal(t, http.MethodPost, statusErr.Method)
	assert.Len(t, statusErr.Body, 512, "the quoted body is bounded")
	assert.Equal(t, body[:512], statusErr.Body)
	assert.ErrorContains(t, err, "register tax-1: POST "+registry.URL()+"/api/v1/executors: 400 Bad Request: éé")
	assert.NotContains(t, err.Error(), "TAIL")
}

func TestClientSendsABearerTokenNamingTheExecutor(t *testing.T) {
	secret := securitytest.Secret(t)
	minter, err := security.NewMinter(security.MinterConfig{
		Secret: secret, Issuer: "tax-service", Audience: "gamelan-engine", TTL: 5 * time.Minute,
		Subject: "tax-service", Name: "tax-service", Version: "1.0.0", ExecutorTypes: []string{"calculate-tax"},
	})
	require.NoError(t, err)
	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: secret, Issuer: "tax-service", Audience: "gamelan-engine"})
	require.NoError(t, err)
	verify := func(token string) error {
		_, err := verifier.Verify(token)
		return err
	}
	registry := resttest.Start(t, resttest.WithAuth(verify), resttest.GamelanMode())
	client := newClient(t, registry.URL(), func(c *ClientConfig) { c.Token = minter.Token })
	registrar, heartbeater := NewRegistrar(client, time.Minute), NewHeartbeater(client)

	ctx := testContext(t)
	require.NoError(t, registrar.Register(ctx, reg("tax-1")))
	require.NoError(t, registrar.Register(ctx, reg("tax-2")))
	require.NoError(t, heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: "tax-1"}))
	require.NoError(t, heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: "tax-2"}))
	require.NoError(t, registrar.Unregister(ctx, "tax-1"))
	require.ErrorIs(t, heartbeater.Heartbeat(ctx, domain.Heartbeat{ExecutorID: "tax-1"}), domain.ErrNotRegistered)

	requests := registry.Requests()
	require.Len(t, requests, 9, "%v", statuses(requests))
	assert.Zero(t, registry.Refused())
	for _, r := range requests {
		token, err := security.BearerToken(r.Authorization)
		require.NoError(t, err, "%s %s", r.Method, r.Path)
		claims, err := verifier.Verify(token)
		require.NoError(t, err, "%s %s", r.Method, r.Path)
		assert.Equal(t, r.ExecutorID, claims.Subject, "%s %s: the token's subject is the executor the call is about", r.Method, r.Path)
	}

	// An engine with another secret refuses the token: 401, not retried.
	other := securitytest.Secret(t)
	otherVerifier, err := security.NewVerifier(security.VerifierConfig{Secret: other, Issuer: "tax-service"})
	require.NoError(t, err)
	strict := resttest.Start(t, resttest.WithAuth(func(token string) error {
		_, err := otherVerifier.Verify(token)
		return err
	}))
	client = newClient(t, strict.URL(), func(c *ClientConfig) { c.Token = minter.Token })
	err = NewRegistrar(client, time.Minute).Register(ctx, reg("tax-1"))
	var statusErr *StatusError
	require.ErrorAs(t, err, &statusErr)
	assert.Equal(t, http.StatusUnauthorized, statusErr.Status)
	assert.Equal(t, 1, strict.Refused())
	assert.NotContains(t, err.Error(), string(secret))
}

func TestClientTokenFailureSendsNothing(t *testing.T) {
	registry := resttest.Start(t)
	client := newClient(t, registry.URL(), func(c *ClientConfig) {
		c.Token = func(string) (string, error) { return "", errors.New("no key") }
	})
	err := NewRegistrar(client, time.Minute).Register(testContext(t), reg("tax-1"))
	require.ErrorContains(t, err, "token: no key")
	assert.Empty(t, registry.Requests())
}

func TestClientErrorsHideTheURLPassword(t *testing.T) {
	registry := resttest.Start(t)
	base := "http://engine-user:s3cret-pass@" + registry.Addr()
	registrar := NewRegistrar(newClient(t, base, func(c *ClientConfig) { c.Attempts = 1 }), time.Minute)

	registry.FailNext(1, http.StatusBadRequest)
	err := registrar.Register(testContext(t), reg("tax-1"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret-pass", "answer error")
	assert.Contains(t, err.Error(), "engine-user", "the user name still says which credentials")

	registry.Stop()
	err = registrar.Register(testContext(t), reg("tax-1"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret-pass", "network error")
}

func TestNewClientRejectsBadBaseURLs(t *testing.T) {
	for _, base := range []string{"", "localhost:8080", "ftp://engine", "http://", "://engine", "engine/api"} {
		_, err := NewClient(ClientConfig{BaseURL: base})
		assert.Error(t, err, "%q", base)
	}
	_, err := NewClient(ClientConfig{BaseURL: "https://engine.example:8443/gamelan/"})
	assert.NoError(t, err)
}
