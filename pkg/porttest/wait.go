package porttest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Defaults of the harnesses' timing fields.
const (
	// DefaultWaitTimeout bounds every wait for something that must happen.
	DefaultWaitTimeout = 10 * time.Second
	// DefaultQuietPeriod is how long a scenario watches for something that
	// must not happen when no later event can bound the observation.
	DefaultQuietPeriod = 300 * time.Millisecond
	// promptly bounds calls that must return at once, such as a call made
	// with an already cancelled context or a Settle callback.
	promptly = 2 * time.Second
)

// orDefault returns d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// waitIntake waits until cond holds, failing the test with what and the
// intake's state after timeout.
func waitIntake(t *testing.T, in *Intake, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := in.WaitUntil(ctx, cond); err != nil {
		t.Fatalf("waited %s for %s: %v; %s", timeout, what, err, in)
	}
}

// staysTrue watches the intake for period and fails the test, saying what,
// if holds turns false meanwhile. The watch is event driven: holds is
// evaluated on every change of the intake, not polled.
func staysTrue(t *testing.T, in *Intake, period time.Duration, what string, holds func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), period)
	defer cancel()
	if err := in.WaitUntil(ctx, func() bool { return !holds() }); err == nil {
		t.Fatalf("%s; %s", what, in)
	}
}

// eventually waits until cond holds, polling: for engine-side observations
// (Received, Lookup, LastHeartbeat) that offer no change notification.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	require.Eventually(t, cond, timeout, 5*time.Millisecond, msgAndArgs...)
}

// returnsPromptly runs call and fails the test if it has not returned within
// promptly. It returns call's error.
func returnsPromptly(t *testing.T, what string, call func() error) error {
	t.Helper()
	return returnsWithin(t, what, promptly, call)
}

// returnsWithin runs call and fails the test if it has not returned within
// limit. It returns call's error.
func returnsWithin(t *testing.T, what string, limit time.Duration, call func() error) error {
	t.Helper()
	done := make(chan error, 1) // buffered: a late call never blocks
	go func() { done <- call() }()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		t.Fatalf("%s did not return within %s", what, limit)
		return nil
	}
}

// scenario is one named contract scenario over the state S it works with.
type scenario[S any] struct {
	name string
	run  func(S)
}

// runScenarios runs each scenario as a parallel subtest under one subtest
// named group, so that the suite returns only when every scenario has
// finished. newState builds a scenario's state from a fresh harness.
func runScenarios[S any](t *testing.T, group string, newState func(t *testing.T) S, scenarios []scenario[S]) {
	t.Helper()
	t.Run(group, func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				sc.run(newState(t))
			})
		}
	})
}
