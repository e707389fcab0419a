package executor_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/pkg/executor"
)

func TestNumberAcceptsNumbersAndNumericStrings(t *testing.T) {
	tests := []struct {
		name  string
		value any
		want  float64
	}{
		{"float64", 12.5, 12.5},
		{"float32", float32(2.5), 2.5},
		{"int", 7, 7},
		{"int32", int32(-3), -3},
		{"int64", int64(1 << 40), 1 << 40},
		{"json.Number", json.Number("99.25"), 99.25},
		{"json.Number exponent", json.Number("1e3"), 1000},
		{"string", "100", 100},
		{"decimal string", "0.1", 0.1},
		{"negative string", "-42.5", -42.5},
		{"exponent string", "2.5e2", 250},
		{"string with surrounding whitespace", " \t12.5\n ", 12.5},
		{"zero", 0.0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := executor.Number(map[string]any{"amount": tt.value}, "amount")
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestNumberRejectsWhatIsNotAFiniteNumber(t *testing.T) {
	tests := []struct {
		name    string
		vars    map[string]any
		wantErr string
	}{
		{"missing", map[string]any{}, `"amount" is missing`},
		{"nil map", nil, `"amount" is missing`},
		{"null", map[string]any{"amount": nil}, `"amount" is missing`},
		{"word", map[string]any{"amount": "ten"}, `"amount" is not a number: "ten"`},
		{"empty string", map[string]any{"amount": ""}, `"amount" is not a number`},
		{"blank string", map[string]any{"amount": "   "}, `"amount" is not a number`},
		{"number with unit", map[string]any{"amount": "12 EUR"}, `"amount" is not a number`},
		{"bad json.Number", map[string]any{"amount": json.Number("x1")}, `"amount" is not a number`},
		{"boolean", map[string]any{"amount": true}, `"amount" is not a number: bool`},
		{"list", map[string]any{"amount": []any{1.0}}, `"amount" is not a number: []interface {}`},
		{"object", map[string]any{"amount": map[string]any{}}, `"amount" is not a number`},
		{"NaN", map[string]any{"amount": math.NaN()}, `"amount" is not a finite number`},
		{"+Inf", map[string]any{"amount": math.Inf(1)}, `"amount" is not a finite number`},
		{"-Inf", map[string]any{"amount": math.Inf(-1)}, `"amount" is not a finite number`},
		{"float32 NaN", map[string]any{"amount": float32(math.NaN())}, `"amount" is not a finite number`},
		{"NaN string", map[string]any{"amount": "NaN"}, `"amount" is not a finite number`},
		{"Inf string", map[string]any{"amount": "Inf"}, `"amount" is not a finite number`},
		{"-Infinity string", map[string]any{"amount": "-Infinity"}, `"amount" is not a finite number`},
		{"NaN json.Number", map[string]any{"amount": json.Number("NaN")}, `"amount" is not a finite number`},
		{"out of range string", map[string]any{"amount": "1e400"}, `"amount" is not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := executor.Number(tt.vars, "amount")
			assert.ErrorContains(t, err, tt.wantErr)
			assert.Zero(t, got)
		})
	}
}

func TestStringAcceptsNonEmptyStrings(t *testing.T) {
	for _, s := range []string{"ops@example.com", "x", "  padded  ", "0"} {
		got, err := executor.String(map[string]any{"recipient": s}, "recipient")
		require.NoError(t, err, "%q", s)
		assert.Equal(t, s, got, "the value is returned as given, untrimmed")
	}
}

func TestStringRejectsMissingEmptyAndNonStrings(t *testing.T) {
	tests := []struct {
		name    string
		vars    map[string]any
		wantErr string
	}{
		{"missing", map[string]any{}, `"recipient" is missing`},
		{"nil map", nil, `"recipient" is missing`},
		{"null", map[string]any{"recipient": nil}, `"recipient" is missing`},
		{"empty", map[string]any{"recipient": ""}, `"recipient" is empty`},
		{"whitespace only", map[string]any{"recipient": " \t\n"}, `"recipient" is empty`},
		{"number", map[string]any{"recipient": 42.0}, `"recipient" is not a string: float64`},
		{"boolean", map[string]any{"recipient": true}, `"recipient" is not a string: bool`},
		{"object", map[string]any{"recipient": map[string]any{"a": "b"}}, `"recipient" is not a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := executor.String(tt.vars, "recipient")
			assert.ErrorContains(t, err, tt.wantErr)
			assert.Empty(t, got)
		})
	}
}
