package porttest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/ports"
	"github.com/gamelan-go/executor/pkg/porttest"
)

func task(node string) *domain.Task {
	return &domain.Task{TaskID: "task-" + node, RunID: "run-1", NodeID: node, Attempt: 1}
}

// settleRecorder is a Delivery.Settle that records its calls.
type settleRecorder struct {
	calls chan error
}

func newSettleRecorder() *settleRecorder { return &settleRecorder{calls: make(chan error, 8)} }

func (r *settleRecorder) settle(err error) { r.calls <- err }

func TestIntakeEnforcesCapacity(t *testing.T) {
	in := porttest.NewIntake(2)
	ctx := context.Background()
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("a")}))
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("b")}))
	err := in.Offer(ctx, ports.Delivery{Task: task("c")})
	require.ErrorIs(t, err, domain.ErrOverloaded)

	require.Len(t, in.Offers(), 2)
	require.Len(t, in.Outstanding(), 2)
	require.Len(t, in.Refusals(), 1)
	assert.Equal(t, "c", in.Refusals()[0].Task.NodeID)
	assert.Equal(t, 3, in.Attempts())
	assert.Equal(t, 2, in.MaxOutstanding())

	require.True(t, in.Offers()[0].Settle(nil))
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("c")}), "room after a settlement")
	assert.Equal(t, 2, in.MaxOutstanding(), "never more than the capacity at once")
}

func TestIntakeAwaitCapacityBlocksUntilSettled(t *testing.T) {
	in := porttest.NewIntake(1)
	rec := newSettleRecorder()
	require.NoError(t, in.Offer(context.Background(), ports.Delivery{Task: task("a"), Settle: rec.settle}))

	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := in.AwaitCapacity(short)
	require.ErrorIs(t, err, context.DeadlineExceeded, "AwaitCapacity while full")

	room := make(chan int, 1)
	go func() {
		n, err := in.AwaitCapacity(context.Background())
		assert.NoError(t, err)
		room <- n
	}()
	require.NoError(t, in.WaitUntil(t.Context(), func() bool { return in.AwaitCalls() == 2 }))
	handedBack := errors.New("handed back")
	require.True(t, in.Offers()[0].Settle(handedBack))
	select {
	case n := <-room:
		assert.Equal(t, 1, n)
	case <-time.After(5 * time.Second):
		t.Fatal("AwaitCapacity did not return after the task was settled")
	}
	require.Equal(t, handedBack, <-rec.calls, "the source's Settle got the error")
	require.False(t, in.Offers()[0].Settle(nil), "a second Settle is refused")
	require.Empty(t, rec.calls, "a second Settle reached the source")
	assert.True(t, in.Offers()[0].Settled())
}

func TestIntakeRefusals(t *testing.T) {
	in := porttest.NewIntake(10)
	ctx := context.Background()

	err := in.Offer(ctx, ports.Delivery{})
	require.ErrorIs(t, err, domain.ErrInvalidTask, "no task")
	err = in.Offer(ctx, ports.Delivery{Task: &domain.Task{NodeID: "n"}})
	require.ErrorIs(t, err, domain.ErrInvalidTask, "no run id")

	boom := errors.New("boom")
	in.RefuseNext(boom)
	in.RefuseNext(domain.ErrOverloaded)
	require.ErrorIs(t, in.Offer(ctx, ports.Delivery{Task: task("a")}), boom)
	require.ErrorIs(t, in.Offer(ctx, ports.Delivery{Task: task("a")}), domain.ErrOverloaded)
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("a")}), "refusals are used up")

	in.RefuseMatching(func(t domain.Task) bool { return t.NodeID == "bad" }, domain.ErrInvalidTask)
	for range 2 {
		require.ErrorIs(t, in.Offer(ctx, ports.Delivery{Task: task("bad")}), domain.ErrInvalidTask)
	}
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("good")}))
	assert.Len(t, in.Refusals(), 6)
	assert.Len(t, in.Offers(), 2)
}

func TestIntakeDrain(t *testing.T) {
	in := porttest.NewIntake(2)
	ctx := context.Background()
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("a")}))

	blocked := make(chan error, 1)
	full := porttest.NewIntake(1)
	require.NoError(t, full.Offer(ctx, ports.Delivery{Task: task("a")}))
	go func() {
		_, err := full.AwaitCapacity(context.Background())
		blocked <- err
	}()
	require.NoError(t, full.WaitUntil(t.Context(), func() bool { return full.AwaitCalls() == 1 }))
	full.Drain()
	require.ErrorIs(t, <-blocked, domain.ErrDraining, "a waiting AwaitCapacity learns of the drain")

	in.Drain()
	_, err := in.AwaitCapacity(ctx)
	require.ErrorIs(t, err, domain.ErrDraining)
	require.ErrorIs(t, in.Offer(ctx, ports.Delivery{Task: task("b")}), domain.ErrDraining)
	require.True(t, in.Offers()[0].Settle(nil), "offered tasks can still be settled")
	assert.Contains(t, in.String(), "draining true")
}

func TestIntakeCancel(t *testing.T) {
	in := porttest.NewIntake(4)
	ctx := context.Background()
	withKey := task("b")
	withKey.IdempotencyKey = withKey.Key()
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: task("a")}))
	require.NoError(t, in.Offer(ctx, ports.Delivery{Task: withKey}))

	assert.True(t, in.Cancel("task-a", "by task id"))
	assert.True(t, in.Cancel("run-1:b:1", "by idempotency key"))
	assert.True(t, in.Cancel("run-1:a:1", "by run:node:attempt"))
	assert.False(t, in.Cancel("task-zzz", "unknown"))
	require.True(t, in.Offers()[0].Settle(nil))
	assert.False(t, in.Cancel("task-a", "settled tasks are not found"))

	cancels := in.Cancels()
	require.Len(t, cancels, 5)
	assert.Equal(t, porttest.CancelCall{TaskID: "task-a", Reason: "by task id", Found: true}, cancels[0])
	assert.False(t, cancels[4].Found)
}

func TestIntakeSettleAll(t *testing.T) {
	in := porttest.NewIntake(3)
	rec := newSettleRecorder()
	for _, n := range []string{"a", "b", "c"} {
		require.NoError(t, in.Offer(context.Background(), ports.Delivery{Task: task(n), Settle: rec.settle, Redeliverable: true}))
	}
	require.True(t, in.Offers()[1].Settle(nil))
	assert.Equal(t, 2, in.SettleAll(domain.ErrHandedBack))
	assert.Empty(t, in.Outstanding())
	assert.Len(t, rec.calls, 3)
	assert.True(t, in.Offers()[0].Redeliverable)
}

func TestUniqueIDIsAValidDomainID(t *testing.T) {
	t.Run("with spaces/and slashes: and "+strings.Repeat("x", 300), func(t *testing.T) {
		a, b := porttest.UniqueID(t), porttest.UniqueID(t)
		assert.True(t, domain.ValidID(a), "UniqueID %q", a)
		assert.True(t, domain.ValidID(a+"-suffix-for-a-node-or-executor"), "room for suffixes")
		assert.NotEqual(t, a, b)
	})
}
