package app_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/app"
	"github.com/gamelan-go/executor/internal/domain"
)

// TestRegistersAgainWhenHeartbeatsSucceedAfterAFailedReregistration: a
// heartbeat fails while the engine is down, and so does the re-registration
// that follows, so the type is not registered and the runtime not ready.
// When the engine comes back with its state, heartbeats succeed again: the
// runtime must register the type again at once (and be ready), not wait for
// the periodic re-registration, here disabled. Found by the HTTP registrar's
// recovery test (test/component).
func TestRegistersAgainWhenHeartbeatsSucceedAfterAFailedReregistration(t *testing.T) {
	cfg := testConfig()
	cfg.HeartbeatInterval = 5 * time.Millisecond
	h := newHarness(t, cfg, on("t", completing("calc", 1)))
	h.run(t)
	require.Eventually(t, func() bool { return h.rt.Ready() == nil }, 5*time.Second, time.Millisecond)

	// The engine goes down: heartbeats and registrations fail.
	h.control.mu.Lock()
	h.control.failReg = 1 << 30
	h.control.mu.Unlock()
	h.control.setFailHeartbeats(true)
	require.Eventually(t, func() bool { return h.rt.Ready() != nil }, 5*time.Second, time.Millisecond,
		"ready although its re-registration failed")

	// It comes back, still knowing the executor.
	h.control.mu.Lock()
	h.control.failReg = 0
	h.control.failHB = false
	h.control.mu.Unlock()
	require.Eventually(t, func() bool { return h.rt.Ready() == nil }, 5*time.Second, time.Millisecond,
		"not ready again although heartbeats succeed: %v", h.rt.Ready())

	events := h.events.all()
	lastFailure := -1
	for i, e := range events {
		if e == "register-failed:test-calc" {
			lastFailure = i
		}
	}
	require.NotEqual(t, -1, lastFailure)
	after := events[lastFailure+1:]
	assert.True(t, slices.Contains(after, "register:test-calc"), "registered again: %v", after)
}

func TestSharedRegistrationsAreNotUnregistered(t *testing.T) {
	ev := &events{}
	ctl := &fakeControl{events: ev}
	src := newFakeSource(ev, "t")
	rt, err := app.New(testConfig(), []app.Hosted{
		{Executor: completing("own", 1), Registration: domain.Registration{ExecutorID: "svc-own-pod1"}, Transport: "t"},
		{Executor: completing("shared", 1), Registration: domain.Registration{ExecutorID: "svc-shared", Shared: true}, Transport: "t"},
	}, []app.Transport{{Name: "t", Source: src, Sink: &fakeSink{events: ev}}}, ctl, ctl, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	<-src.started
	cancel()
	require.NoError(t, <-done)
	assert.NotEqual(t, -1, ev.index("register:svc-shared"))
	assert.NotEqual(t, -1, ev.index("unregister:svc-own-pod1"))
	assert.Equal(t, -1, ev.index("unregister:svc-shared"), "a replica unregistered an id other replicas still serve")
}

// watchingSource is a fakeSource that reports signs of a forgetful engine.
type watchingSource struct {
	*fakeSource
	suspects chan string
}

func (s watchingSource) RegistrationSuspects() <-chan string { return s.suspects }

// A sign that the engine may have forgotten the executors (the connection
// to it remade: a restarted engine answers heartbeats from executors it
// does not know with success) registers every type again at once, without
// waiting for a heartbeat or the periodic refresh, and the runtime is not
// ready until the engine has accepted the registrations.
func TestSignsOfAForgetfulEngineRegisterAgainAtOnce(t *testing.T) {
	ev := &events{}
	ctl := &fakeControl{events: ev}
	src := watchingSource{fakeSource: newFakeSource(ev, "t"), suspects: make(chan string, 1)}
	cfg := testConfig() // heartbeats every hour, no periodic re-registration
	rt, err := app.New(cfg, []app.Hosted{
		{Executor: completing("a", 1), Registration: domain.Registration{ExecutorID: "svc-a"}, Transport: "t"},
		{Executor: completing("b", 1), Registration: domain.Registration{ExecutorID: "svc-b"}, Transport: "t"},
	}, []app.Transport{{Name: "t", Source: src, Sink: &fakeSink{events: ev}}}, ctl, ctl, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-src.started
	require.Eventually(t, func() bool { return rt.Ready() == nil }, 5*time.Second, time.Millisecond)
	registrations := func() int {
		n := 0
		for _, e := range ev.all() {
			if e == "register:svc-a" || e == "register:svc-b" {
				n++
			}
		}
		return n
	}
	require.Equal(t, 2, registrations())

	// The engine restarted; the new one refuses registrations for a moment.
	ctl.mu.Lock()
	ctl.failReg = 2
	ctl.mu.Unlock()
	src.suspects <- "the connection to the engine was remade"
	require.Eventually(t, func() bool { return rt.Ready() != nil }, 5*time.Second, time.Millisecond,
		"ready although the engine may not know the executors")
	assert.Contains(t, rt.Ready().Error(), "not registered")

	// It accepts them again: the next sign registers both at once.
	src.suspects <- "the connection to the engine was remade"
	require.Eventually(t, func() bool { return registrations() == 4 }, 5*time.Second, time.Millisecond, "events: %v", ev.all())
	require.Eventually(t, func() bool { return rt.Ready() == nil }, 5*time.Second, time.Millisecond)
}
