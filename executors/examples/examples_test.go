package examples

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/pkg/executor"
)

func TestAllReturnsEveryExampleWithAValidDescriptor(t *testing.T) {
	all := All(Config{PaymentGatewayDelay: time.Second})

	types := map[string]executor.Descriptor{}
	for _, ex := range all {
		d := ex.Descriptor()
		require.NoError(t, d.WithDefaults().Validate(), "descriptor of %s", d.Type)
		assert.Equal(t, []string{d.Type}, d.SupportedNodeTypes, "supported node types of %s", d.Type)
		assert.Equal(t, "1.0.0", d.Version, "version of %s", d.Type)
		types[d.Type] = d.WithDefaults()
	}
	require.Len(t, types, 4, "executor types must be distinct")

	want := map[string]struct {
		communication executor.CommunicationType
		maxConcurrent int
	}{
		"calculate-tax":       {executor.GRPC, 10},
		"order-validator":     {executor.GRPC, 20},
		"payment-processor":   {executor.Kafka, 10},
		"notification-sender": {executor.GRPC, 10},
	}
	for typ, w := range want {
		d, ok := types[typ]
		if assert.True(t, ok, "All must include %s", typ) {
			assert.Equal(t, w.communication, d.CommunicationType, "communication type of %s", typ)
			assert.Equal(t, w.maxConcurrent, d.MaxConcurrentTasks, "max concurrent tasks of %s", typ)
		}
	}
}

func TestAllPassesTheGatewayDelayToPaymentProcessor(t *testing.T) {
	for _, ex := range All(Config{PaymentGatewayDelay: 3 * time.Second}) {
		if p, ok := ex.(*PaymentProcessor); ok {
			assert.Equal(t, 3*time.Second, p.gatewayDelay)
			return
		}
	}
	t.Fatal("All returned no *PaymentProcessor")
}
