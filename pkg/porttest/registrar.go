package porttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
)

// RegistrarHarness is one Registrar under test and the engine's registry it
// writes to.
type RegistrarHarness struct {
	// Registrar is the adapter under test.
	Registrar ports.Registrar
	// Lookup returns the engine's current registration of an executor id.
	// Required.
	Lookup func(executorID string) (domain.Registration, bool)
	// All returns every registration the engine holds, or is nil when the
	// engine cannot list them; with it the suite checks that registering
	// twice leaves one entry.
	All func() []domain.Registration
	// Unsupported lists the registration fields the transport cannot carry.
	Unsupported []Field
	// WaitTimeout bounds calls and waits for the registry to show a change;
	// DefaultWaitTimeout if zero.
	WaitTimeout time.Duration
}

// Registrar runs the Registrar contract scenarios, each as a parallel
// subtest with its own harness from newHarness:
//
//   - FieldsVisible: a registration shows in the engine with its id, type,
//     communication types, endpoint, metadata (adapters may add entries),
//     supported node types, max concurrent tasks and version.
//   - RegisterTwiceRefreshes: registering the id again returns nil, leaves
//     one entry and shows the new fields.
//   - UnregisterRemoves: after Unregister the engine no longer knows the id.
//   - UnregisterUnknown: unregistering an id never registered returns nil.
//   - Concurrency: registrations of 8 ids from 8 goroutines all succeed and
//     all show.
//   - CancelledContext: Register and Unregister with a cancelled context
//     return an error promptly.
//
// Lookup is polled until the change shows, so a registry fed through a
// broker may lag.
func Registrar(t *testing.T, newHarness func(t *testing.T) RegistrarHarness) {
	t.Helper()
	runScenarios(t, "Registrar", func(t *testing.T) *registrarScenario {
		h := newHarness(t)
		require.NotNil(t, h.Registrar, "RegistrarHarness.Registrar")
		require.NotNil(t, h.Lookup, "RegistrarHarness.Lookup")
		return &registrarScenario{
			t:           t,
			h:           h,
			id:          UniqueID(t),
			wait:        orDefault(h.WaitTimeout, DefaultWaitTimeout),
			unsupported: fieldSet(h.Unsupported),
		}
	}, []scenario[*registrarScenario]{
		{"FieldsVisible", testRegistrarFieldsVisible},
		{"RegisterTwiceRefreshes", testRegistrarRegisterTwice},
		{"UnregisterRemoves", testRegistrarUnregisterRemoves},
		{"UnregisterUnknown", testRegistrarUnregisterUnknown},
		{"Concurrency", testRegistrarConcurrency},
		{"CancelledContext", testRegistrarCancelledContext},
	})
}

// registrarScenario is the state one Registrar scenario works with.
type registrarScenario struct {
	t           *testing.T
	h           RegistrarHarness
	id          string // the scenario's executor id stem
	wait        time.Duration
	unsupported fieldSet
}

// registration returns a registration of the scenario's executor id with a
// suffix, every field set. The serving communication type differs from the
// declared one, as after a deployment override.
func (s *registrarScenario) registration(suffix string) domain.Registration {
	return registrationFor(s.id+suffix, "calculate-tax")
}

func registrationFor(executorID, executorType string) domain.Registration {
	return domain.Registration{
		ExecutorID: executorID,
		Descriptor: domain.Descriptor{
			Type:               executorType,
			CommunicationType:  domain.CommunicationGRPC,
			MaxConcurrentTasks: 7,
			SupportedNodeTypes: []string{"tax", "vat-calculation"},
			Version:            "2.3.4",
		},
		CommunicationType: domain.CommunicationKafka,
		Endpoint:          "tax-service-0.tax.svc:9090",
		Metadata:          map[string]string{"name": "tax-service", "version": "2.3.4", "host": "tax-service-0"},
	}
}

func (s *registrarScenario) call(what string, f func(ctx context.Context) error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait)
	defer cancel()
	require.NoError(s.t, f(ctx), what)
}

func (s *registrarScenario) register(reg domain.Registration) {
	s.t.Helper()
	s.call("Register "+reg.ExecutorID, func(ctx context.Context) error { return s.h.Registrar.Register(ctx, reg) })
}

func (s *registrarScenario) unregister(id string) {
	s.t.Helper()
	s.call("Unregister "+id, func(ctx context.Context) error { return s.h.Registrar.Unregister(ctx, id) })
}

// waitShows waits until Lookup returns a registration for which matches
// holds, and returns it.
func (s *registrarScenario) waitShows(id string, what string, matches func(domain.Registration) bool) domain.Registration {
	s.t.Helper()
	var got domain.Registration
	eventually(s.t, s.wait, func() bool {
		reg, ok := s.h.Lookup(id)
		if ok && matches(reg) {
			got = reg
			return true
		}
		return false
	}, "the engine never showed %s for %s", what, id)
	return got
}

func (s *registrarScenario) requireFields(want, got domain.Registration) {
	t := s.t
	t.Helper()
	assert.Equal(t, want.ExecutorID, got.ExecutorID, "ExecutorID")
	assert.Equal(t, want.Descriptor.Type, got.Descriptor.Type, "Descriptor.Type")
	if s.unsupported.supports(FieldRegistrationCommunicationType) {
		assert.Equal(t, want.CommunicationType, got.CommunicationType, "field %s", FieldRegistrationCommunicationType)
	}
	if s.unsupported.supports(FieldRegistrationDescriptorCommunicationType) {
		assert.Equal(t, want.Descriptor.CommunicationType, got.Descriptor.CommunicationType, "field %s", FieldRegistrationDescriptorCommunicationType)
	}
	if s.unsupported.supports(FieldRegistrationEndpoint) {
		assert.Equal(t, want.Endpoint, got.Endpoint, "field %s", FieldRegistrationEndpoint)
	}
	if s.unsupported.supports(FieldRegistrationMetadata) {
		for k, v := range want.Metadata {
			assert.Equal(t, v, got.Metadata[k], "field %s[%q]", FieldRegistrationMetadata, k)
		}
	}
	if s.unsupported.supports(FieldRegistrationSupportedNodeTypes) {
		assert.ElementsMatch(t, want.Descriptor.SupportedNodeTypes, got.Descriptor.SupportedNodeTypes, "field %s", FieldRegistrationSupportedNodeTypes)
	}
	if s.unsupported.supports(FieldRegistrationMaxConcurrentTasks) {
		assert.Equal(t, want.Descriptor.MaxConcurrentTasks, got.Descriptor.MaxConcurrentTasks, "field %s", FieldRegistrationMaxConcurrentTasks)
	}
	if s.unsupported.supports(FieldRegistrationVersion) {
		assert.Equal(t, want.Descriptor.Version, got.Descriptor.Version, "field %s", FieldRegistrationVersion)
	}
	if t.Failed() {
		t.FailNow()
	}
}

func testRegistrarFieldsVisible(s *registrarScenario) {
	want := s.registration("")
	s.register(want)
	got := s.waitShows(want.ExecutorID, "the registration", func(domain.Registration) bool { return true })
	s.requireFields(want, got)
}

func testRegistrarRegisterTwice(s *registrarScenario) {
	first := s.registration("")
	s.register(first)
	s.waitShows(first.ExecutorID, "the first registration", func(domain.Registration) bool { return true })

	refreshed := s.registration("")
	refreshed.Endpoint = "tax-service-1.tax.svc:9191"
	refreshed.Descriptor.MaxConcurrentTasks = 12
	refreshed.Metadata["host"] = "tax-service-1"
	s.register(refreshed)
	// Wait for whichever refreshed field the transport carries, then
	// compare all of them.
	got := s.waitShows(refreshed.ExecutorID, "the refreshed registration", func(r domain.Registration) bool {
		switch {
		case s.unsupported.supports(FieldRegistrationEndpoint):
			return r.Endpoint == refreshed.Endpoint
		case s.unsupported.supports(FieldRegistrationMaxConcurrentTasks):
			return r.Descriptor.MaxConcurrentTasks == refreshed.Descriptor.MaxConcurrentTasks
		case s.unsupported.supports(FieldRegistrationMetadata):
			return r.Metadata["host"] == refreshed.Metadata["host"]
		}
		return true
	})
	s.requireFields(refreshed, got)

	if s.h.All != nil {
		n := 0
		for _, r := range s.h.All() {
			if r.ExecutorID == refreshed.ExecutorID {
				n++
			}
		}
		require.Equal(s.t, 1, n, "registrations of %s after registering it twice", refreshed.ExecutorID)
	}
}

func testRegistrarUnregisterRemoves(s *registrarScenario) {
	gone, kept := s.registration("-gone"), s.registration("-kept")
	s.register(gone)
	s.register(kept)
	s.waitShows(gone.ExecutorID, "the registration", func(domain.Registration) bool { return true })
	s.waitShows(kept.ExecutorID, "the registration", func(domain.Registration) bool { return true })

	s.unregister(gone.ExecutorID)
	eventually(s.t, s.wait, func() bool {
		_, ok := s.h.Lookup(gone.ExecutorID)
		return !ok
	}, "the engine still knows %s after Unregister", gone.ExecutorID)
	_, ok := s.h.Lookup(kept.ExecutorID)
	require.True(s.t, ok, "Unregister of %s also removed %s", gone.ExecutorID, kept.ExecutorID)
}

func testRegistrarUnregisterUnknown(s *registrarScenario) {
	s.unregister(s.id + "-never-registered")
	// Twice in a row, as a retried shutdown does.
	reg := s.registration("")
	s.register(reg)
	s.unregister(reg.ExecutorID)
	s.unregister(reg.ExecutorID)
}

func testRegistrarConcurrency(s *registrarScenario) {
	const n = 8
	var (
		wg   sync.WaitGroup
		errs = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.wait)
			defer cancel()
			errs[i] = s.h.Registrar.Register(ctx, s.registration(fmt.Sprintf("-%d", i)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(s.t, err, "concurrent Register %d", i)
	}
	for i := range n {
		want := s.registration(fmt.Sprintf("-%d", i))
		got := s.waitShows(want.ExecutorID, "the registration", func(domain.Registration) bool { return true })
		s.requireFields(want, got)
	}
}

func testRegistrarCancelledContext(s *registrarScenario) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	reg := s.registration("")
	err := returnsPromptly(s.t, "Register with a cancelled context", func() error { return s.h.Registrar.Register(ctx, reg) })
	require.Error(s.t, err, "Register with a cancelled context")
	err = returnsPromptly(s.t, "Unregister with a cancelled context", func() error { return s.h.Registrar.Unregister(ctx, reg.ExecutorID) })
	require.Error(s.t, err, "Unregister with a cancelled context")
}
