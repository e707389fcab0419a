package testkit_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/test/testkit"
)

// waitFor bounds every wait for something that must happen; the machine
// may be busy, so it is generous.
const waitFor = 20 * time.Second

// echoServer is the proxy's target: it echoes what each connection sends,
// passes a FIN on (it closes its side once the client has), and reports
// how each connection ended.
type echoServer struct {
	addr     string
	received atomic.Int64
	// ends receives, per connection, nil when the client closed cleanly,
	// else the read error.
	ends chan error
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{addr: lis.Addr().String(), ends: make(chan error, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go s.echo(conn.(*net.TCPConn))
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
	})
	return s
}

func (s *echoServer) echo(conn *net.TCPConn) {
	defer conn.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			s.received.Add(int64(n))
			if _, werr := conn.Write(buf[:n]); werr != nil {
				s.ends <- werr
				return
			}
		}
		if errors.Is(err, io.EOF) {
			_ = conn.CloseWrite()
			s.ends <- nil
			return
		}
		if err != nil {
			s.ends <- err
			return
		}
	}
}

// nextEnd returns how the next connection of the server ended.
func (s *echoServer) nextEnd(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.ends:
		return err
	case <-time.After(waitFor):
		t.Fatal("no connection of the target ended")
		return nil
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn.(*net.TCPConn)
}

// roundTrip writes msg and reads its echo.
func roundTrip(conn net.Conn, msg []byte) error {
	if err := conn.SetDeadline(time.Now().Add(waitFor)); err != nil {
		return err
	}
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// readEnd reads conn until it ends and returns why: io.EOF for a FIN.
func readEnd(t *testing.T, conn net.Conn) error {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	_, err := io.Copy(io.Discard, conn)
	if err == nil {
		return io.EOF // io.Copy reports a clean end as nil
	}
	require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the connection did not end")
	return err
}

// requireRefused checks that a connection to addr is reset at once: the
// kernel completes the handshake, and the RST may come before connect
// returns or after.
func requireRefused(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		require.ErrorIs(t, err, syscall.ECONNRESET)
		return
	}
	defer conn.Close()
	require.ErrorIs(t, readEnd(t, conn), syscall.ECONNRESET)
}

// requireSilent checks that nothing arrives on conn for a while.
func requireSilent(t *testing.T, conn net.Conn, d time.Duration) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(d)))
	n, err := conn.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "%d bytes arrived", n)
}

func TestProxyForwardsBothWaysAndPassesFINOn(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	conn := dial(t, p.Addr())
	msg := bytes.Repeat([]byte("gamelan "), 1000)
	require.NoError(t, roundTrip(conn, msg))
	s := p.Stats()
	assert.Equal(t, testkit.ProxyStats{Accepted: 1, Open: 1, ToTarget: int64(len(msg)), ToClient: int64(len(msg))}, s)

	// A FIN from the client reaches the target, and the target's FIN
	// comes back.
	require.NoError(t, conn.CloseWrite())
	require.NoError(t, echo.nextEnd(t))
	require.ErrorIs(t, readEnd(t, conn), io.EOF)
	require.Eventually(t, func() bool { return p.Stats().Open == 0 }, waitFor, time.Millisecond)
}

// TestProxyDelayIsLatencyNotThroughputCap sends messages spaced by a
// quarter of the delay: each comes back after twice the delay (once each
// way), not later, which a proxy that waited before reading the next chunk
// would exceed (the second message would wait for the first to go out).
func TestProxyDelayIsLatencyNotThroughputCap(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	conn := dial(t, p.Addr())
	require.NoError(t, roundTrip(conn, []byte("before")))

	const d = 800 * time.Millisecond
	p.Delay(d) // on an open connection
	const messages, size = 4, 8
	sent := make([]time.Time, messages)
	rtts := make(chan time.Duration, messages)
	readErr := make(chan error, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		buf := make([]byte, size)
		for i := range messages {
			if _, err := io.ReadFull(conn, buf); err != nil {
				readErr <- err
				return
			}
			if want := fmt.Sprintf("msg-%04d", i); string(buf) != want {
				readErr <- fmt.Errorf("got %q, want %q: out of order", buf, want)
				return
			}
			rtts <- time.Since(sent[i])
		}
		readErr <- nil
	}()
	tick := time.NewTicker(d / 4)
	defer tick.Stop()
	for i := range messages {
		if i > 0 {
			<-tick.C
		}
		sent[i] = time.Now()
		_, err := conn.Write(fmt.Appendf(nil, "msg-%04d", i))
		require.NoError(t, err)
	}
	require.NoError(t, <-readErr)
	close(rtts)
	for rtt := range rtts {
		assert.GreaterOrEqual(t, rtt, 2*d, "a message came back before its delay")
		assert.Less(t, rtt, 2*d+d/2, "a message waited for the one before it")
	}
}

func TestProxyThrottleCapsThroughput(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	conn := dial(t, p.Addr())
	const rate, size = 64 << 10, 128 << 10 // two seconds' worth each way
	p.Throttle(rate)
	msg := bytes.Repeat([]byte{'t'}, size)
	began := time.Now()
	require.NoError(t, roundTrip(conn, msg))
	took := time.Since(began)
	assert.GreaterOrEqual(t, took, 3*time.Second/2, "%d bytes at %d B/s", size, rate)
	t.Logf("%d bytes echoed at %d B/s each way in %s", size, rate, took)

	p.Throttle(0)
	began = time.Now()
	require.NoError(t, roundTrip(conn, msg))
	assert.Less(t, time.Since(began), 3*time.Second/2, "the cap was not lifted")
	assert.Equal(t, int64(2*size), p.Stats().ToClient)
}

func TestProxyDropRateResetsConnections(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)

	// Certain: the first chunk resets the connection, at both ends.
	p.DropRate(1)
	conn := dial(t, p.Addr())
	err := roundTrip(conn, []byte("lost"))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.ErrorIs(t, echo.nextEnd(t), syscall.ECONNRESET)
	assert.Zero(t, echo.received.Load(), "the chunk was forwarded")
	s := p.Stats()
	assert.Equal(t, 1, s.Resets)
	assert.Equal(t, 1, s.Dropped)

	// 5% per chunk over 800 chunks (a round trip forwards two): about 40
	// resets, and each fails exactly one round trip.
	p.DropRate(0.05)
	var failed int
	var c net.Conn
	for i := range 400 {
		if c == nil {
			c = dial(t, p.Addr())
		}
		if err := roundTrip(c, fmt.Appendf(nil, "m%d", i)); err != nil {
			require.ErrorIs(t, err, syscall.ECONNRESET)
			failed++
			c.Close()
			c = nil
		}
	}
	dropped := p.Stats().Dropped - 1
	t.Logf("5%% drop rate: %d of 400 round trips reset", failed)
	assert.Equal(t, failed, dropped)
	assert.GreaterOrEqual(t, dropped, 10)
	assert.LessOrEqual(t, dropped, 100)

	p.DropRate(0)
	if c == nil {
		c = dial(t, p.Addr())
	}
	for i := range 50 {
		require.NoError(t, roundTrip(c, fmt.Appendf(nil, "kept%d", i)))
	}
}

func TestProxyBlackholeHoldsEverythingUntilHeal(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	open := dial(t, p.Addr())
	require.NoError(t, roundTrip(open, []byte("before")))
	before := echo.received.Load()

	p.Blackhole()
	_, err := open.Write([]byte("held"))
	require.NoError(t, err)
	require.NoError(t, open.CloseWrite()) // the FIN is held too
	late := dial(t, p.Addr())             // a new connection is accepted
	_, err = late.Write([]byte("late"))
	require.NoError(t, err)

	requireSilent(t, open, 300*time.Millisecond)
	requireSilent(t, late, 300*time.Millisecond)
	assert.Equal(t, before, echo.received.Load(), "the target received something")
	select {
	case err := <-echo.ends:
		t.Fatalf("a connection ended at the target during the blackhole: %v", err)
	default:
	}
	s := p.Stats()
	assert.Equal(t, 2, s.Open)
	assert.Zero(t, s.Resets+s.Cuts+s.Refused)

	p.Heal()
	require.NoError(t, open.SetReadDeadline(time.Now().Add(waitFor)))
	got, err := io.ReadAll(open)
	require.NoError(t, err, "the held FIN came through after the data")
	assert.Equal(t, "held", string(got))
	require.NoError(t, echo.nextEnd(t))
	require.NoError(t, late.SetReadDeadline(time.Now().Add(waitFor)))
	buf := make([]byte, 4)
	_, err = io.ReadFull(late, buf)
	require.NoError(t, err)
	assert.Equal(t, "late", string(buf))
}

func TestProxyResetSendsRSTAndCutSendsFIN(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	a, b := dial(t, p.Addr()), dial(t, p.Addr())
	require.NoError(t, roundTrip(a, []byte("a")))
	require.NoError(t, roundTrip(b, []byte("b")))

	require.Equal(t, 2, p.Reset())
	require.ErrorIs(t, readEnd(t, a), syscall.ECONNRESET)
	require.ErrorIs(t, readEnd(t, b), syscall.ECONNRESET)
	require.ErrorIs(t, echo.nextEnd(t), syscall.ECONNRESET)
	require.ErrorIs(t, echo.nextEnd(t), syscall.ECONNRESET)
	assert.Equal(t, 2, p.Stats().Resets)
	assert.Zero(t, p.Stats().Open)

	c := dial(t, p.Addr())
	require.NoError(t, roundTrip(c, []byte("c")), "new connections are taken after a reset")
	require.Equal(t, 1, p.Cut())
	require.ErrorIs(t, readEnd(t, c), io.EOF)
	require.NoError(t, echo.nextEnd(t), "the target saw a clean close")
	s := p.Stats()
	assert.Equal(t, 1, s.Cuts)
	assert.Equal(t, 2, s.Resets)
	assert.Zero(t, s.Open)
}

func TestProxyRefuseResetsNewConnectionsOnly(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	open := dial(t, p.Addr())
	require.NoError(t, roundTrip(open, []byte("open")))

	p.Refuse(true)
	requireRefused(t, p.Addr())
	require.NoError(t, roundTrip(open, []byte("still open")))
	assert.Equal(t, 1, p.Stats().Refused)

	p.Refuse(false)
	require.NoError(t, roundTrip(dial(t, p.Addr()), []byte("taken")))
	assert.Equal(t, 3, p.Stats().Accepted)
}

// TestProxyHealLiftsEveryFault heals a proxy that delays by an hour,
// throttles to a byte a second, blackholes and refuses: what was waiting
// is delivered at once, and new connections are taken.
func TestProxyHealLiftsEveryFault(t *testing.T) {
	echo := startEcho(t)
	p := testkit.NewProxy(t, echo.addr)
	conn := dial(t, p.Addr())
	require.NoError(t, roundTrip(conn, []byte("before")))
	p.Delay(time.Hour)
	p.Throttle(1)
	p.Blackhole()
	p.Refuse(true)
	msg := []byte("waiting out an hour")
	_, err := conn.Write(msg)
	require.NoError(t, err)
	requireSilent(t, conn, 200*time.Millisecond)

	p.Heal()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	got := make([]byte, len(msg))
	_, err = io.ReadFull(conn, got)
	require.NoError(t, err)
	assert.Equal(t, msg, got)
	require.NoError(t, roundTrip(dial(t, p.Addr()), []byte("new")))
}

func TestProxyRetargetAndClose(t *testing.T) {
	p := testkit.NewProxy(t, "")
	requireRefused(t, p.Addr()) // no target yet

	echo := startEcho(t)
	p.Retarget(echo.addr)
	conn := dial(t, p.Addr())
	require.NoError(t, roundTrip(conn, []byte("hello")))

	p.Close()
	require.Error(t, readEnd(t, conn))
	_, err := net.Dial("tcp", p.Addr())
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	s := p.Stats()
	assert.Equal(t, 1, s.Refused)
	assert.Zero(t, s.Open)
}
