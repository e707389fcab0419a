package grpc

import (
	"context"
	"log/slog"
	"sync"

	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/gamelan-go/executor/internal/ports"
)

// ConnectionWatch looks for signs that the engine may have forgotten this
// process's executors, and reports them to the runtime, which registers
// every type again (ports.RegistrationWatcher). A restarted engine forgets
// its executors, and an engine like Gamelan answers heartbeats from
// executors it does not know with success, so that heartbeats alone do not
// tell. The signs:
//
//   - the connection to the engine becomes ready again after it was lost
//     (a restart, a GOAWAY, a network cut): the engine at the other end may
//     be a new one;
//   - an adapter using the connection hears that the engine does not know
//     an executor (a stream or ReportResults answered NotFound), and says so
//     through Suspect.
//
// So that an engine restart between two calls is noticed at once, a
// connection that goes idle (grpc-go does after a GOAWAY) is reconnected.
type ConnectionWatch struct {
	conn     *ggrpc.ClientConn
	log      *slog.Logger
	suspects chan string // holds one pending reason: signals coalesce

	cancel context.CancelFunc
	done   sync.WaitGroup
}

var _ ports.RegistrationWatcher = (*ConnectionWatch)(nil)

// NewConnectionWatch starts watching conn until Close.
func NewConnectionWatch(conn *ggrpc.ClientConn, log *slog.Logger) *ConnectionWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &ConnectionWatch{conn: conn, log: log, suspects: make(chan string, 1), cancel: cancel}
	w.done.Go(func() { w.watch(ctx) })
	return w
}

// RegistrationSuspects implements ports.RegistrationWatcher.
func (w *ConnectionWatch) RegistrationSuspects() <-chan string { return w.suspects }

// Suspect reports a sign that the engine may have forgotten an executor.
// It never blocks: a reason still pending absorbs it.
func (w *ConnectionWatch) Suspect(reason string) {
	select {
	case w.suspects <- reason:
	default:
	}
}

// Close stops watching.
func (w *ConnectionWatch) Close() {
	w.cancel()
	w.done.Wait()
}

func (w *ConnectionWatch) watch(ctx context.Context) {
	wasReady, lost := false, false
	state := w.conn.GetState()
	for {
		switch state {
		case connectivity.Ready:
			if lost {
				w.log.Info("connection to the engine remade: registering again, since the engine may be a new one")
				w.Suspect("the connection to the engine was remade")
			}
			wasReady, lost = true, false
		case connectivity.Idle:
			lost = lost || wasReady
			w.conn.Connect()
		case connectivity.Connecting, connectivity.TransientFailure:
			lost = lost || wasReady
		case connectivity.Shutdown:
			return
		}
		if !w.conn.WaitForStateChange(ctx, state) {
			return
		}
		state = w.conn.GetState()
	}
}
