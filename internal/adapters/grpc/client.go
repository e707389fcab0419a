package grpc

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/domain"
)

// minKeepAliveTime is grpc-go's floor on client keepalive pings: it raises
// any lower setting to it.
const minKeepAliveTime = 10 * time.Second

// DefaultKeepAliveTime is as often as default gRPC servers accept a client's
// pings: grpc-java (permitKeepAliveTime), gRPC C-core
// (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS) and grpc-go
// (keepalive.EnforcementPolicy.MinTime) all default to 5 minutes, and answer
// a client that pings more often (twice too often, with C-core's and
// grpc-go's two strikes) with GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
const DefaultKeepAliveTime = 5 * time.Minute

// ClientConfig configures the connection to the engine's ExecutorService.
type ClientConfig struct {
	// Target is the engine's address, host:port (any grpc-go target).
	Target string
	// TLS, when set, secures the connection (mutual TLS when it carries a
	// client certificate); nil means plaintext.
	TLS *tls.Config
	// Credentials, when set, attach a bearer token to every call.
	Credentials credentials.PerRPCCredentials
	// KeepAliveTime is how long the connection may carry no traffic before
	// a keepalive ping (DefaultKeepAliveTime if 0; raised to 10s if lower).
	// Pinging more often than the engine permits gets the connection
	// closed. KeepAliveTimeout is how long a ping may go unanswered before
	// the connection is considered dead.
	KeepAliveTime, KeepAliveTimeout time.Duration
	// KeepAliveWithoutCalls also pings while no call is open, which
	// default servers refuse (set it only when the engine permits it).
	KeepAliveWithoutCalls bool
	// MaxMessageSize bounds messages sent and received, in bytes
	// (DefaultMaxMessageSize if 0).
	MaxMessageSize int
}

// Validate reports the first problem with c.
func (c ClientConfig) Validate() error {
	if c.Target == "" {
		return errors.New("grpc client: target is empty")
	}
	if c.MaxMessageSize < 0 {
		return fmt.Errorf("grpc client: max message size %d is negative", c.MaxMessageSize)
	}
	return nil
}

// Dial returns a client connection to the engine. It does not block: the
// connection is made on first use and remade after failures by grpc-go.
func Dial(c ClientConfig) (*ggrpc.ClientConn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	transport := insecure.NewCredentials()
	if c.TLS != nil {
		transport = credentials.NewTLS(c.TLS)
	}
	maxSize := orDefaultMaxSize(c.MaxMessageSize)
	opts := []ggrpc.DialOption{
		ggrpc.WithTransportCredentials(transport),
		ggrpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                max(cmp.Or(c.KeepAliveTime, DefaultKeepAliveTime), minKeepAliveTime),
			Timeout:             c.KeepAliveTimeout,
			PermitWithoutStream: c.KeepAliveWithoutCalls,
		}),
		ggrpc.WithDefaultCallOptions(ggrpc.MaxCallRecvMsgSize(maxSize), ggrpc.MaxCallSendMsgSize(maxSize)),
		ggrpc.WithConnectParams(reconnect),
	}
	if c.Credentials != nil {
		opts = append(opts, ggrpc.WithPerRPCCredentials(c.Credentials))
	}
	conn, err := ggrpc.NewClient(c.Target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", c.Target, err)
	}
	return conn, nil
}

// reconnect is how the connection to the engine is remade after it was lost.
// gRPC's default backoff grows to 120 s, so an engine back after a minute's
// outage could wait that long for its executors; capped at 5 s (with
// jitter, so a fleet does not reconnect in step), the executor is back within
// about 5 s of the engine, whatever the outage.
var reconnect = ggrpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  250 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   5 * time.Second,
	},
	MinConnectTimeout: 5 * time.Second,
}

// callError wraps a failed call's error with the operation, translating the
// statuses the runtime acts on into domain errors.
func callError(op string, err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("%s: %w: %w", op, domain.ErrNotRegistered, err)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s: %w: %w", op, domain.ErrUnauthenticated, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isNotRegistered(err error) bool { return errors.Is(err, domain.ErrNotRegistered) }
