package ports

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
)

// offerIntake is a fake Intake for the tests of Gate: Offer records the
// delivery and returns err; hold, when set, runs inside Offer.
type offerIntake struct {
	mu         sync.Mutex
	err        error
	deliveries []Delivery
	hold       func()
}

func (o *offerIntake) Offer(_ context.Context, d Delivery) error {
	if o.hold != nil {
		o.hold()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deliveries = append(o.deliveries, d)
	return o.err
}

func (o *offerIntake) offered() []Delivery {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Delivery(nil), o.deliveries...)
}

func (o *offerIntake) AwaitCapacity(context.Context) (int, error) { return 1, nil }
func (o *offerIntake) Cancel(string, string) bool                 { return false }

// refusalLines records what the gate asks to log.
type refusalLines struct {
	mu    sync.Mutex
	lines []string // "key: msg"
}

func (r *refusalLines) Log(_ *slog.Logger, _ slog.Level, key, msg string, _ ...slog.Attr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, key+": "+msg)
}

func (r *refusalLines) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func newTestGate(authenticate func(string) error) (*Gate, *refusalLines) {
	lines := &refusalLines{}
	return NewGate(GateConfig{Name: "push", Authenticate: authenticate, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Refusals: lines}), lines
}

// pushed is a well-formed pushed task carrying token "good".
func pushed() Pushed {
	return Pushed{
		RunID: "run-1", NodeID: "node-1",
		Token: func() (string, error) { return "good", nil },
		Task:  func() (domain.Task, error) { return domain.Task{RunID: "run-1", NodeID: "node-1", Attempt: 1}, nil },
	}
}

// TestGateClassifiesOffers checks the verdict on each outcome of Offer, and
// that only the refusals of bad calls are logged.
func TestGateClassifiesOffers(t *testing.T) {
	cases := []struct {
		name    string
		offer   error
		verdict Verdict
		logged  []string
	}{
		{name: "accepted", offer: nil, verdict: Accepted},
		{name: "full", offer: overloaded, verdict: Unavailable},
		{name: "draining", offer: draining, verdict: Unavailable},
		{name: "invalid", offer: invalid, verdict: BadRequest, logged: []string{"invalid: push task refused: invalid"}},
		{name: "an error the contract does not name", offer: unnamed, verdict: Unavailable,
			logged: []string{"failed: push task refused: the runtime failed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gate, lines := newTestGate(nil)
			intake := &offerIntake{err: tc.offer}
			gate.Attach(intake)

			verdict, err := gate.Admit(t.Context(), pushed())
			assert.Equal(t, tc.verdict, verdict)
			if tc.offer == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.offer, "the error tells the engine why")
			}
			require.Len(t, intake.offered(), 1)
			d := intake.offered()[0]
			assert.True(t, d.Refusable, "a pushed task is refusable: the engine waits for the answer")
			assert.Equal(t, "node-1", d.Task.NodeID)
			assert.Equal(t, tc.logged, lines.all())
		})
	}
}

// TestGateRefusesBadCallsBeforeOffering checks authentication and parsing:
// a call that fails either is refused and logged, and nothing is offered.
func TestGateRefusesBadCallsBeforeOffering(t *testing.T) {
	authenticate := func(token string) error {
		if token != "good" {
			return errors.New("bad token")
		}
		return nil
	}
	noToken, badToken, badTask := pushed(), pushed(), pushed()
	noToken.Token = func() (string, error) { return "", errors.New("no bearer token") }
	badToken.Token = func() (string, error) { return "forged", nil }
	badTask.Task = func() (domain.Task, error) { return domain.Task{}, errors.New("X-Attempt is required") }
	cases := []struct {
		name    string
		p       Pushed
		verdict Verdict
		message string
		logged  string
	}{
		{"no token", noToken, Unauthenticated, "no bearer token", "auth: push task refused: authentication failed"},
		{"token refused", badToken, Unauthenticated, "bad token", "auth: push task refused: authentication failed"},
		{"unreadable task", badTask, BadRequest, "X-Attempt is required", "invalid: push task refused: invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gate, lines := newTestGate(authenticate)
			intake := &offerIntake{}
			gate.Attach(intake)

			verdict, err := gate.Admit(t.Context(), tc.p)
			assert.Equal(t, tc.verdict, verdict)
			require.EqualError(t, err, tc.message)
			assert.Empty(t, intake.offered(), "nothing offered")
			assert.Equal(t, []string{tc.logged}, lines.all())
		})
	}

	t.Run("authentication off: the token is not read", func(t *testing.T) {
		gate, _ := newTestGate(nil)
		gate.Attach(&offerIntake{})
		p := pushed()
		p.Token = func() (string, error) { panic("token read with authentication off") }
		verdict, err := gate.Admit(t.Context(), p)
		require.NoError(t, err)
		assert.Equal(t, Accepted, verdict)
	})
}

// TestGateRefusesWhileDetached checks that tasks are refused as unavailable,
// without a log line, before Attach and after Detach.
func TestGateRefusesWhileDetached(t *testing.T) {
	gate, lines := newTestGate(nil)
	verdict, err := gate.Admit(t.Context(), pushed())
	assert.Equal(t, Unavailable, verdict, "before Attach")
	require.EqualError(t, err, "executor is not accepting tasks (starting or shutting down)")

	intake := &offerIntake{}
	gate.Attach(intake)
	verdict, _ = gate.Admit(t.Context(), pushed())
	require.Equal(t, Accepted, verdict)

	gate.Detach()
	verdict, err = gate.Admit(t.Context(), pushed())
	assert.Equal(t, Unavailable, verdict, "after Detach")
	require.ErrorIs(t, err, errNotAttached)
	assert.Len(t, intake.offered(), 1, "nothing offered after Detach")
	assert.Empty(t, lines.all())
}

// TestGateDetachWaitsForAnOfferInProgress checks what a TaskSource's Stop
// promises: Detach, called while an Offer is in progress, returns only after
// that Offer has.
func TestGateDetachWaitsForAnOfferInProgress(t *testing.T) {
	gate, _ := newTestGate(nil)
	var (
		mu     sync.Mutex
		events []string
	)
	record := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	detached := make(chan struct{})
	intake := &offerIntake{}
	intake.hold = func() {
		go func() {
			gate.Detach()
			record("detached")
			close(detached)
		}()
		// A writer waiting on the gate's lock makes TryRLock fail: Detach
		// is then blocked on this Offer.
		require.Eventually(t, func() bool {
			if gate.mu.TryRLock() {
				gate.mu.RUnlock()
				return false
			}
			return true
		}, 5*time.Second, time.Millisecond, "Detach never waited for the lock")
		record("offer returns")
	}
	gate.Attach(intake)

	verdict, err := gate.Admit(t.Context(), pushed())
	require.NoError(t, err)
	require.Equal(t, Accepted, verdict)
	select {
	case <-detached:
	case <-time.After(5 * time.Second):
		t.Fatal("Detach did not return after the Offer did")
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"offer returns", "detached"}, events)
}
