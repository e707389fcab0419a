package service

import (
	"fmt"
	"log/slog"

	"github.com/google/wire"

	"github.com/gamelan-go/executor/internal/security"
)

// securitySet provides the tokens this service signs and the check of the
// tokens it receives, shared by every transport.
var securitySet = wire.NewSet(newTokens, newInbound)

// newTokens returns the minter of this service's tokens, or nil when no
// JWT secret is set.
func newTokens(s *settings, p *plan, log *slog.Logger) (*security.Minter, error) {
	if s.JWTSecret == "" {
		if p.reachesOutside() {
			log.Warn("no JWT secret: calls to the engine carry no token and inbound tasks are not authenticated")
		}
		return nil, nil
	}
	minter, err := security.NewMinter(security.MinterConfig{
		Secret:        []byte(s.JWTSecret),
		Issuer:        string(s.JWTIssuer),
		Audience:      string(s.JWTAudience),
		TTL:           s.JWTTTL.Duration(),
		Subject:       string(s.Name),
		Name:          string(s.Name),
		Version:       string(s.Version),
		ExecutorTypes: p.executorTypes(),
	})
	if err != nil {
		return nil, fmt.Errorf("token minter: %w", err)
	}
	return minter, nil
}

// authenticate verifies the bearer token of an inbound task; nil accepts
// every task.
type authenticate func(token string) error

// newInbound verifies the engine's tokens on inbound tasks (push calls, REST
// posts), or is nil when there is no secret or inbound authentication is off
// (said loudly).
func newInbound(s *settings, log *slog.Logger) (authenticate, error) {
	if s.JWTSecret == "" {
		return nil, nil
	}
	if s.JWTInbound == "off" {
		log.Warn("INBOUND AUTHENTICATION IS OFF: push and REST tasks are accepted without a token (GAMELAN_EXECUTOR_JWT_INBOUND=off)")
		return nil, nil
	}
	verifier, err := security.NewVerifier(security.VerifierConfig{
		Secret:   []byte(s.JWTSecret),
		Issuer:   string(s.JWTInboundIssuer),
		Audience: s.JWTInboundAudience,
	})
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	return func(token string) error {
		_, err := verifier.Verify(token)
		return err
	}, nil
}
