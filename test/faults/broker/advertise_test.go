package broker

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// advertisingListener is a broker's listener that reports another address
// as its own. kfake advertises each broker (in metadata, FindCoordinator and
// the rest) at its listener's Addr, so a listener given through
// kfake.ListenFn decides where clients connect after bootstrapping: through
// a TCP proxy in front of the broker, for a scenario that cuts the
// connection between the executor and the broker and heals it.
type advertisingListener struct {
	net.Listener
	advertised net.Addr
}

// Addr implements net.Listener: the advertised address.
func (l advertisingListener) Addr() net.Addr { return l.advertised }

// TestBrokerAdvertisesTheAddressItsListenerReports is the groundwork of the
// network scenarios between executor and broker (partition_test.go).
// A kfake broker whose listener reports another address advertises that
// address, and a client that bootstrapped on the real one connects to the
// advertised one for its next request: with a proxy there, every connection
// after bootstrap goes through the proxy, and cutting it partitions the
// client from the broker.
func TestBrokerAdvertisesTheAddressItsListenerReports(t *testing.T) {
	t.Parallel()
	// Where the broker is advertised: a listener that only counts who
	// connects, standing in for the proxy.
	elsewhere, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { elsewhere.Close() })
	connected := make(chan struct{}, 1)
	go func() {
		for {
			conn, err := elsewhere.Accept()
			if err != nil {
				return
			}
			select {
			case connected <- struct{}{}:
			default:
			}
			conn.Close()
		}
	}()

	var real net.Addr
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, address string) (net.Listener, error) {
		_, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen(network, net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			return nil, err
		}
		real = ln.Addr()
		return advertisingListener{Listener: ln, advertised: elsewhere.Addr()}, nil
	}))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	require.Equal(t, []string{elsewhere.Addr().String()}, cluster.ListenAddrs(), "the cluster reports the advertised address as its own")

	client, err := kgo.NewClient(kgo.SeedBrokers(real.String()), kgo.DisableClientMetrics())
	require.NoError(t, err)
	t.Cleanup(client.Close)
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()

	// The seed (the real listener) answers metadata naming the advertised
	// address.
	metadata, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, client)
	require.NoError(t, err)
	require.Len(t, metadata.Brokers, 1)
	host, port, err := net.SplitHostPort(elsewhere.Addr().String())
	require.NoError(t, err)
	assert.Equal(t, host, metadata.Brokers[0].Host)
	assert.Equal(t, port, strconv.Itoa(int(metadata.Brokers[0].Port)))

	// A request for a broker by its id goes to the advertised address.
	go func() {
		requestCtx, cancelRequest := context.WithTimeout(ctx, 10*time.Second)
		defer cancelRequest()
		_, _ = client.Broker(int(metadata.Brokers[0].NodeID)).Request(requestCtx, kmsg.NewPtrApiVersionsRequest())
	}()
	select {
	case <-connected:
	case <-ctx.Done():
		t.Fatal("the client never connected to the advertised address")
	}
}
