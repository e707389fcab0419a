package devengine

import (
	"context"
	"errors"
	"time"

	"github.com/gamelan-go/executor/internal/engine/grpcengine"
	"github.com/gamelan-go/executor/internal/security"
)

// grpcAuth returns the check of every inbound gRPC call: its bearer token
// must pass verify; what fails is counted as refused.
func grpcAuth(engine *Engine, verify func(string) error) func(context.Context) error {
	return func(ctx context.Context) error {
		token, ok := grpcengine.BearerToken(ctx)
		if !ok {
			engine.Refused()
			return errors.New("no bearer token in the authorization metadata")
		}
		if err := verify(token); err != nil {
			engine.Refused()
			return err
		}
		return nil
	}
}

// verifyAsOf returns a check of executors' tokens as of a given time (a
// Kafka record's production), returning the token's subject.
func verifyAsOf(cfg security.VerifierConfig) func(token string, at time.Time) (string, error) {
	return func(token string, at time.Time) (string, error) {
		cfg := cfg
		cfg.Now = func() time.Time { return at }
		verifier, err := security.NewVerifier(cfg)
		if err != nil {
			return "", err
		}
		claims, err := verifier.Verify(token)
		return claims.Subject, err
	}
}
