package testkit

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 that stands between a client (an
// executor) and its target (an engine, a broker) and injects network
// faults on command, at any time, into the connections open and those to
// come. Create it with NewProxy; every method is safe for concurrent use.
//
// Each connection the proxy accepts is paired with one it dials to the
// target at once, and has a pipe each way: a reader goroutine that reads
// whatever arrives and stamps it with the time it arrived, and a writer
// goroutine that passes it on, in order, when the faults allow (so four
// goroutines a connection: a delay needs the reading to go on while the
// writing waits). A chunk is what one read returned: usually one write of
// the sender (a few gRPC frames, one Kafka request). The faults, each
// applied to the chunks already waiting as well as to those to come:
//
//   - Delay(d): a chunk read at t is written at t+d, each way. The reader
//     keeps reading meanwhile, so a delay is latency, not a cap on
//     throughput.
//   - Throttle(n): at most n bytes a second each way, per connection (0:
//     no limit); a chunk is written in slices of a fiftieth of n.
//   - DropRate(p): before each chunk it forwards, either way, the proxy
//     resets the connection with probability p instead (the chunk is lost
//     with it). gRPC writes a message or a few in one chunk, so 0.01 resets
//     about one connection per hundred messages.
//   - Blackhole(): a partition. Connections stay open and new ones are
//     accepted (and dialled: a loopback target cannot be partitioned), but
//     nothing is forwarded, FINs included: what arrives is held, in order,
//     first in the pipe (a few chunks) and then in the kernel's socket
//     buffers, where the sender's TCP sees no window, and it is delivered
//     when the partition heals. That is what a partition shorter than TCP's
//     retransmission timeout does: packets are lost and retransmitted, and
//     nothing is lost for good. Nothing is discarded.
//   - Reset(): every open connection is reset (RST, SO_LINGER 0) at both
//     ends. Cut(): every open connection is closed cleanly (FIN) at both
//     ends; what either peer sends afterwards is read and discarded.
//   - Refuse(true): new connections are reset as soon as accepted (the
//     kernel completes the handshake, so a client sees ECONNRESET rather
//     than ECONNREFUSED); open ones are untouched.
//   - Heal(): no delay, no throttle, no drops, no blackhole, no refusal.
//     What the blackhole held and what waits out a delay is delivered at
//     once. Reset and Cut are one-off actions: there is nothing to undo.
//
// A reset or a FIN from a peer is passed on to the other peer, after the
// data that came before it (so a FIN waits out a blackhole too).
type Proxy struct {
	listener net.Listener
	wg       sync.WaitGroup // the accept loop and every connection's goroutines

	mu     sync.Mutex
	target string
	faults faults
	// changed is closed and replaced whenever the faults change, so that
	// writers waiting on a delay, a throttle or a blackhole look again.
	changed chan struct{}
	links   map[*link]struct{} // the connections open, not yet reset, cut or ended
	stats   ProxyStats
	closed  bool
}

// faults is the fault state the proxy applies now.
type faults struct {
	delay     time.Duration
	rate      int // bytes per second, 0 unlimited
	dropRate  float64
	blackhole bool
	refuse    bool
}

// ProxyStats are a Proxy's counts since it started.
type ProxyStats struct {
	// Accepted counts the connections accepted, refused ones included.
	Accepted int
	// Open is how many connections are open now: accepted, dialled, and not
	// yet reset, cut or closed by their peers.
	Open int
	// Refused counts connections reset at once because Refuse was on or the
	// target could not be dialled.
	Refused int
	// Resets counts the open connections the proxy reset: by Reset, or by
	// DropRate. Dropped counts those DropRate reset.
	Resets, Dropped int
	// Cuts counts the connections Cut closed.
	Cuts int
	// ToTarget and ToClient count the bytes forwarded each way.
	ToTarget, ToClient int64
}

// NewProxy starts a proxy on a free port of 127.0.0.1 that forwards to
// target, and closes it when t ends. target may be empty and set later
// with Retarget (for a target that listens only after it must be told the
// proxy's address); until then, connections are refused.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &Proxy{listener: lis, target: target, changed: make(chan struct{}), links: make(map[*link]struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Retarget sets the address new connections are dialled to; open
// connections keep theirs.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Delay adds d of latency each way (0 removes it).
func (p *Proxy) Delay(d time.Duration) { p.update(func(f *faults) { f.delay = d }) }

// Throttle caps each connection's throughput each way at bytesPerSecond
// (0 lifts the cap).
func (p *Proxy) Throttle(bytesPerSecond int) { p.update(func(f *faults) { f.rate = bytesPerSecond }) }

// DropRate makes the proxy reset a connection, instead of forwarding a
// chunk, with probability prob per chunk (0 stops it).
func (p *Proxy) DropRate(prob float64) { p.update(func(f *faults) { f.dropRate = prob }) }

// Blackhole stops forwarding anything, holding it until Heal.
func (p *Proxy) Blackhole() { p.update(func(f *faults) { f.blackhole = true }) }

// Refuse makes the proxy reset new connections as soon as it accepts them
// (on), or take them again (off).
func (p *Proxy) Refuse(on bool) { p.update(func(f *faults) { f.refuse = on }) }

// Heal lifts every fault.
func (p *Proxy) Heal() { p.update(func(f *faults) { *f = faults{} }) }

func (p *Proxy) update(change func(*faults)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	change(&p.faults)
	close(p.changed)
	p.changed = make(chan struct{})
}

// Reset resets every open connection at both ends, and returns how many.
func (p *Proxy) Reset() int {
	n := 0
	for _, l := range p.takeLinks() {
		if l.reset() {
			n++
		}
	}
	p.count(func(s *ProxyStats) { s.Resets += n })
	return n
}

// Cut closes every open connection cleanly (FIN) at both ends, and returns
// how many.
func (p *Proxy) Cut() int {
	n := 0
	for _, l := range p.takeLinks() {
		if l.cut() {
			n++
		}
	}
	p.count(func(s *ProxyStats) { s.Cuts += n })
	return n
}

// takeLinks removes every open connection from the proxy's set and returns
// them, so that each is torn down once.
func (p *Proxy) takeLinks() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
		delete(p.links, l)
	}
	return links
}

// Stats returns the counts so far.
func (p *Proxy) Stats() ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Open = len(p.links)
	return s
}

func (p *Proxy) count(add func(*ProxyStats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	add(&p.stats)
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines. It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.listener.Close()
	for _, l := range p.takeLinks() {
		l.close()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Go(func() { p.serve(conn.(*net.TCPConn)) })
	}
}

// dialTimeout bounds the dial to the target; on loopback it either
// succeeds or is refused at once.
const dialTimeout = 5 * time.Second

// serve connects client to the target and runs the connection's pipes
// until both ends are done.
func (p *Proxy) serve(client *net.TCPConn) {
	p.mu.Lock()
	p.stats.Accepted++
	refuse, target := p.faults.refuse || p.closed, p.target
	p.mu.Unlock()
	var server *net.TCPConn
	if !refuse && target != "" {
		if conn, err := net.DialTimeout("tcp", target, dialTimeout); err == nil {
			server = conn.(*net.TCPConn)
		}
	}
	if server == nil {
		resetConn(client)
		p.count(func(s *ProxyStats) { s.Refused++ })
		return
	}
	l := &link{p: p, client: client, server: server, torn: make(chan struct{})}
	p.mu.Lock()
	if p.closed { // Close ran while dialling: it will not see this link
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	toTarget, toClient := make(chan chunk, pipeChunks), make(chan chunk, pipeChunks)
	var pipes sync.WaitGroup
	pipes.Go(func() { l.read(client, toTarget) })
	pipes.Go(func() { l.read(server, toClient) })
	pipes.Go(func() { l.write(client, toClient, func(s *ProxyStats, n int) { s.ToClient += int64(n) }) })
	l.write(server, toTarget, func(s *ProxyStats, n int) { s.ToTarget += int64(n) })
	pipes.Wait()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
	l.close()
}

// pipeChunks is how many chunks a pipe holds between its reader and its
// writer; beyond it the reader waits and the data waits in the kernel.
const pipeChunks = 64

// chunkSize is the most a reader reads at once.
const chunkSize = 32 << 10

// chunk is what one read returned, and when.
type chunk struct {
	data []byte
	at   time.Time
}

// link is one proxied connection: the client's end and the target's.
type link struct {
	p              *Proxy
	client, server *net.TCPConn

	tearOnce sync.Once
	// torn is closed once the link is reset, cut or closed: writers stop
	// forwarding and discard what is left.
	torn chan struct{}
}

// read passes what src sends to out until src ends. A reset (or any error)
// from a peer is passed on as a reset; a FIN is passed on by the writer,
// after the data before it, when out closes.
func (l *link) read(src *net.TCPConn, out chan<- chunk) {
	defer close(out)
	for {
		buf := make([]byte, chunkSize)
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case out <- chunk{data: buf[:n], at: time.Now()}:
			case <-l.torn: // discarded: after a cut, until the peer closes
			}
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			l.reset() // a no-op when the proxy tore the link down itself
			return
		}
	}
}

// write forwards the chunks of in to dst as the faults allow, and passes a
// clean end of in on as a FIN. counted adds the bytes written to the stats.
func (l *link) write(dst *net.TCPConn, in <-chan chunk, counted func(*ProxyStats, int)) {
	var free time.Time // when the throttle lets the next byte go
	for c := range in {
		rate, ok := l.wait(c.at, free)
		if !ok || l.dropped() {
			continue // discarded: the link is torn down
		}
		for data := c.data; ok && len(data) > 0; {
			n := len(data)
			if rate > 0 {
				n = min(n, max(rate/50, 1))
			}
			// Counted before the write, so that a peer that reads the bytes
			// sees them counted; what a failed write did not write is
			// taken back.
			l.p.count(func(s *ProxyStats) { counted(s, n) })
			if written, err := dst.Write(data[:n]); err != nil {
				l.p.count(func(s *ProxyStats) { counted(s, written-n) })
				l.reset()
				break
			}
			data = data[n:]
			if rate > 0 {
				free = time.Now().Add(time.Duration(n) * time.Second / time.Duration(rate))
			}
			if len(data) > 0 {
				rate, ok = l.wait(c.at, free)
			}
		}
	}
	select {
	case <-l.torn:
	default:
		_ = dst.CloseWrite()
	}
}

// dropped rolls DropRate's dice for one chunk about to be forwarded, and
// resets the link if they say so.
func (l *link) dropped() bool {
	p := l.p
	p.mu.Lock()
	_, open := p.links[l] // not reset or cut by the proxy already
	drop := open && p.faults.dropRate > 0 && rand.Float64() < p.faults.dropRate
	if drop {
		// Counted before the RST goes out, so that a peer that sees it
		// sees it counted.
		delete(p.links, l)
		p.stats.Resets++
		p.stats.Dropped++
	}
	p.mu.Unlock()
	if drop {
		l.reset()
	}
	return drop
}

// wait returns when a chunk read at `at` may be written (no blackhole, its
// delay over, the throttle's next slot at `free` reached, whichever faults
// hold now), with the throttle's rate; false when the link is torn down
// first. It looks again whenever the faults change.
func (l *link) wait(at, free time.Time) (rate int, ok bool) {
	for {
		select {
		case <-l.torn:
			return 0, false
		default:
		}
		l.p.mu.Lock()
		f, changed := l.p.faults, l.p.changed
		l.p.mu.Unlock()
		var timer *time.Timer
		var due <-chan time.Time // nil, never ready, in a blackhole
		if !f.blackhole {
			until := at.Add(f.delay)
			if f.rate > 0 && free.After(until) {
				until = free
			}
			wait := time.Until(until)
			if wait <= 0 {
				return f.rate, true
			}
			timer = time.NewTimer(wait)
			due = timer.C
		}
		select {
		case <-due:
		case <-changed:
		case <-l.torn:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// reset tears the link down with an RST to both peers, and reports
// whether it did (false when the link was torn down before).
func (l *link) reset() bool {
	return l.tear(func() {
		resetConn(l.client)
		resetConn(l.server)
	})
}

// cut tears the link down with a FIN to both peers, and reports whether
// it did; the readers go on reading, and discarding, until the peers
// close.
func (l *link) cut() bool {
	return l.tear(func() {
		_ = l.client.CloseWrite()
		_ = l.server.CloseWrite()
	})
}

// close closes both ends, and tears the link down if nothing did before.
func (l *link) close() {
	l.tear(func() {})
	_ = l.client.Close()
	_ = l.server.Close()
}

// tear closes torn and runs how, once: it reports whether this call did.
func (l *link) tear(how func()) bool {
	done := false
	l.tearOnce.Do(func() {
		close(l.torn)
		how()
		done = true
	})
	return done
}

// resetConn closes conn with an RST rather than a FIN.
func resetConn(conn *net.TCPConn) {
	_ = conn.SetLinger(0)
	_ = conn.Close()
}
