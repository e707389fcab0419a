package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRateLimitsParsing(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  RateLimits
	}{
		{"", nil},
		{"payment-processor=50/s:10", RateLimits{"payment-processor": {PerSecond: 50, Burst: 10}}},
		{" a = 2.5/s , b=120/m:3 ", RateLimits{"a": {PerSecond: 2.5}, "b": {PerSecond: 2, Burst: 3}}},
		{"a=off,b=0,c=OFF", RateLimits{"a": {Off: true}, "b": {Off: true}, "c": {Off: true}}},
	} {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_RATE_LIMITS": tt.value})
			require.NoError(t, err)
			if tt.want == nil {
				assert.Empty(t, cfg.RateLimits)
				return
			}
			assert.Equal(t, tt.want, cfg.RateLimits)
		})
	}
}

func TestRateLimitsRefusals(t *testing.T) {
	for value, want := range map[string]string{
		"a=50":             `entry "a=50": must be type=RATE/s[:BURST]`,
		"a=50/h":           `entry "a=50/h": unit "h" must be s (per second) or m (per minute)`,
		"a=-1/s":           `entry "a=-1/s": rate "-1" must be a positive number`,
		"a=0/s":            `entry "a=0/s": rate "0" must be a positive number`,
		"a=x/s":            `entry "a=x/s": rate "x" must be a positive number`,
		"a=Inf/s":          `entry "a=Inf/s": rate "Inf" must be a positive number`,
		"a=5/s:0":          `entry "a=5/s:0": burst "0" must be a whole number of at least 1`,
		"a=5/s:1.5":        `entry "a=5/s:1.5": burst "1.5" must be a whole number of at least 1`,
		"=5/s":             `entry "=5/s" must be type=RATE/s[:BURST]`,
		"a=5/s,,b=1/s":     `entry "" must be type=RATE/s[:BURST]`,
		"a=5/s,a=off":      `type "a" must appear only once`,
		"payment=50/s:10:": `entry "payment=50/s:10:": burst "10:" must be a whole number`,
	} {
		t.Run(value, func(t *testing.T) {
			_, err := load(t, map[string]string{"GAMELAN_EXECUTOR_RATE_LIMITS": value})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "GAMELAN_EXECUTOR_RATE_LIMITS")
			assert.Contains(t, err.Error(), want)
		})
	}
}

func TestRateLimitsOfATypeNotHosted(t *testing.T) {
	cfg, err := load(t, map[string]string{"GAMELAN_EXECUTOR_RATE_LIMITS": "calculate-tax=5/s,ship=off"})
	require.NoError(t, err)
	assert.EqualError(t, cfg.CheckHostedTypes([]string{"calculate-tax"}),
		`GAMELAN_EXECUTOR_RATE_LIMITS="calculate-tax=5/s,ship=off": type "ship" is not hosted; hosted types: calculate-tax`)
	assert.NoError(t, cfg.CheckHostedTypes([]string{"calculate-tax", "ship"}))
}
