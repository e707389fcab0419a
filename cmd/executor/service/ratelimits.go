package service

import "github.com/gamelan-go/executor/internal/domain"

// rateLimitOverride returns the rate limit GAMELAN_EXECUTOR_RATE_LIMITS sets
// for an executor type, and whether it sets one: an entry wins over the
// type's declared limit, and "off" removes it (override true, limit nil).
// The runtime validates the limit with the rest of the descriptor; the
// configuration has checked its rate and burst already.
func rateLimitOverride(s *settings, typ string) (bool, *domain.RateLimit) {
	l, ok := s.RateLimits[typ]
	switch {
	case !ok:
		return false, nil
	case l.Off:
		return true, nil
	}
	return true, &domain.RateLimit{PerSecond: l.PerSecond, Burst: l.Burst}
}
