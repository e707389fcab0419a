package kafkaengine

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAdvertisedHostIsWhatMetadataNames checks that a broker set up with an
// advertised host names that host, with its real port, in its metadata:
// what a client in another container dials after bootstrapping.
func TestAdvertisedHostIsWhatMetadataNames(t *testing.T) {
	b, err := StartBroker(BrokerConfig{Host: "127.0.0.1", AdvertisedHost: "localhost", Topics: []string{"t"}, Partitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, port, err := net.SplitHostPort(b.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}

	client, err := kgo.NewClient(kgo.SeedBrokers(net.JoinHostPort("127.0.0.1", port)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Brokers) != 1 {
		t.Fatalf("metadata names %d brokers, want 1", len(resp.Brokers))
	}
	got := net.JoinHostPort(resp.Brokers[0].Host, strconv.Itoa(int(resp.Brokers[0].Port)))
	if want := net.JoinHostPort("localhost", port); got != want {
		t.Fatalf("the broker advertises %s, want %s", got, want)
	}
}
