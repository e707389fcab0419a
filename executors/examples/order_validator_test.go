package examples

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/pkg/executor/executortest"
)

func TestOrderValidatorAcceptsOrderIDs(t *testing.T) {
	h := executortest.New(t, OrderValidator{})
	for _, orderID := range []string{"ORDER-1", "ORDER-2024-ABC", "ORDER-"} {
		t.Run(orderID, func(t *testing.T) {
			before := time.Now().UTC().Truncate(time.Second)
			out := executortest.RequireCompleted(t, h.Run(map[string]any{"orderId": orderID}))
			after := time.Now().UTC()

			assert.Equal(t, true, out["valid"])
			stamp, ok := out["validatedAt"].(string)
			require.True(t, ok, "validatedAt = %#v, want a string", out["validatedAt"])
			validatedAt, err := time.Parse(time.RFC3339, stamp)
			require.NoError(t, err, "validatedAt must be RFC 3339")
			assert.Regexp(t, `Z$`, stamp, "validatedAt must be UTC")
			assert.False(t, validatedAt.Before(before) || validatedAt.After(after),
				"validatedAt %s is outside [%s, %s]", validatedAt, before, after)
		})
	}
}

func TestOrderValidatorRejectsOtherOrderIDs(t *testing.T) {
	h := executortest.New(t, OrderValidator{})
	tests := []struct {
		name        string
		vars        map[string]any
		wantOrderID any
		wantMessage string
	}{
		{"missing", map[string]any{}, nil, "missing"},
		{"null", map[string]any{"orderId": nil}, nil, "missing"},
		{"wrong prefix", map[string]any{"orderId": "INVOICE-1"}, "INVOICE-1", `does not start with "ORDER-"`},
		{"lower-case prefix", map[string]any{"orderId": "order-1"}, "order-1", `does not start with "ORDER-"`},
		{"empty string", map[string]any{"orderId": ""}, "", `does not start with "ORDER-"`},
		{"number", map[string]any{"orderId": 42.0}, 42.0, "not a string"},
		{"boolean", map[string]any{"orderId": true}, true, "not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := executortest.RequireFailed(t, h.Run(tt.vars), CodeInvalidOrder)
			assert.Contains(t, info.Message, tt.wantMessage)
			require.Contains(t, info.Context, "orderId", "the error context must carry the orderId received")
			assert.Equal(t, tt.wantOrderID, info.Context["orderId"])
		})
	}
}
