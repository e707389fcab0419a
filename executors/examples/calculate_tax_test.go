package examples

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/pkg/executor/executortest"
)

func TestCalculateTaxComputesTenPercent(t *testing.T) {
	h := executortest.New(t, CalculateTax{})
	tests := []struct {
		name       string
		amount     any
		wantAmount float64
		wantTax    float64
	}{
		{"JSON number", 100.0, 100, 10},
		{"integer", 250, 250, 25},
		{"json.Number", json.Number("80"), 80, 8},
		{"numeric string from the push path", "100", 100, 10},
		{"decimal string with spaces", " 12.5 ", 12.5, 1.25},
		{"zero", 0.0, 0, 0},
		{"negative amount passes through", -40.0, -40, -4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := executortest.RequireCompleted(t, h.Run(map[string]any{"amount": tt.amount}))
			assert.Equal(t, tt.wantAmount, out["amount"])
			assert.IsType(t, float64(0), out["tax"])
			assert.InDelta(t, tt.wantTax, out["tax"], 1e-9)
		})
	}
}

func TestCalculateTaxRejectsABadAmount(t *testing.T) {
	h := executortest.New(t, CalculateTax{})
	tests := []struct {
		name        string
		vars        map[string]any
		wantMessage string
	}{
		{"missing", map[string]any{}, `"amount" is missing`},
		{"null", map[string]any{"amount": nil}, `"amount" is missing`},
		{"non-numeric string", map[string]any{"amount": "ten"}, `"amount" is not a number`},
		{"empty string", map[string]any{"amount": ""}, `"amount" is not a number`},
		{"boolean", map[string]any{"amount": true}, `"amount" is not a number`},
		{"object", map[string]any{"amount": map[string]any{"value": 1}}, `"amount" is not a number`},
		{"not finite", map[string]any{"amount": "NaN"}, `"amount" is not a finite number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := h.Run(tt.vars)
			info := executortest.RequireFailed(t, res, executor.CodeInvalidInput)
			assert.Contains(t, info.Message, tt.wantMessage)
			assert.False(t, info.Retryable, "bad input must not be retried")
		})
	}
}
