package domain

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRateLimitDefaultsAndValidation(t *testing.T) {
	assert.Equal(t, 50, RateLimit{PerSecond: 50}.WithDefaults().Burst)
	assert.Equal(t, 1, RateLimit{PerSecond: 0.5}.WithDefaults().Burst)
	assert.Equal(t, 3, RateLimit{PerSecond: 2.5}.WithDefaults().Burst)
	assert.Equal(t, 7, RateLimit{PerSecond: 50, Burst: 7}.WithDefaults().Burst)
	assert.NoError(t, RateLimit{PerSecond: 0.1, Burst: 1}.Validate())
	assert.Error(t, RateLimit{PerSecond: 0, Burst: 1}.Validate())
	assert.Error(t, RateLimit{PerSecond: -1, Burst: 1}.Validate())
	assert.Error(t, RateLimit{PerSecond: 1, Burst: 0}.Validate())

	d := Descriptor{Type: "pay", RateLimit: &RateLimit{PerSecond: 10}}.WithDefaults()
	require.NoError(t, d.Validate())
	assert.Equal(t, 10, d.RateLimit.Burst)
	bad := Descriptor{Type: "pay", RateLimit: &RateLimit{PerSecond: -2}}.WithDefaults()
	assert.ErrorContains(t, bad.Validate(), "rate limit")
}

func TestRateLimitedErrorWrapsOverloaded(t *testing.T) {
	err := fmt.Errorf("offer: %w", &RateLimitedError{Type: "pay", Limit: RateLimit{PerSecond: 50, Burst: 10}, RetryAfter: 1500 * time.Microsecond})
	assert.True(t, errors.Is(err, ErrRateLimited))
	assert.True(t, errors.Is(err, ErrOverloaded))
	wait, ok := RetryAfter(err)
	assert.True(t, ok)
	assert.Equal(t, 1500*time.Microsecond, wait)
	assert.Contains(t, err.Error(), `"pay" rate limited to 50/s:10: retry after 2 ms`)
	_, ok = RetryAfter(ErrOverloaded)
	assert.False(t, ok)
	assert.Equal(t, int64(1), RetryAfterSeconds(time.Millisecond))
	assert.Equal(t, int64(2), RetryAfterSeconds(1001*time.Millisecond))
}
