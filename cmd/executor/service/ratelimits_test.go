package service

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/pkg/executor"
)

// RATE_LIMITS wins over a type's declared rate limit, "off" removes it, and
// a type it does not name keeps its own.
func TestRateLimitsOverrideTheDeclaredLimit(t *testing.T) {
	declared := &domain.RateLimit{PerSecond: 5, Burst: 2}
	hosted := []executor.Executor{
		fixedExecutor{domain.Descriptor{Type: "pay", RateLimit: declared}},
		fixedExecutor{domain.Descriptor{Type: "ship", RateLimit: declared}},
		fixedExecutor{domain.Descriptor{Type: "keep", RateLimit: declared}},
	}
	s, err := load(func(name string) string {
		return map[string]string{"GAMELAN_EXECUTOR_RATE_LIMITS": "pay=50/s:10,ship=off"}[name]
	})
	require.NoError(t, err)
	p, err := newPlan(s, hosted)
	require.NoError(t, err)
	require.Len(t, p.hosted, 3)
	assert.True(t, p.hosted[0].OverrideRateLimit)
	assert.Equal(t, &domain.RateLimit{PerSecond: 50, Burst: 10}, p.hosted[0].RateLimit)
	assert.True(t, p.hosted[1].OverrideRateLimit)
	assert.Nil(t, p.hosted[1].RateLimit, "off removes the declared limit")
	assert.False(t, p.hosted[2].OverrideRateLimit, "a type not named keeps its declared limit")
}
