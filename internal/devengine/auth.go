package devengine

import (
	"context"
	"time"

	ggrpc "google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gamelan-go/executor/internal/security"
)

// grpcAuth verifies the bearer token of every inbound gRPC call, refusing
// (Unauthenticated) and counting what fails.
type grpcAuth struct {
	engine *Engine
	verify func(token string) error
}

func (a grpcAuth) check(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	if len(values) == 0 {
		a.engine.Refused()
		return status.Error(codes.Unauthenticated, "no authorization metadata")
	}
	token, err := security.BearerToken(values[0])
	if err == nil {
		err = a.verify(token)
	}
	if err != nil {
		a.engine.Refused()
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return nil
}

func (a grpcAuth) unary(ctx context.Context, req any, _ *ggrpc.UnaryServerInfo, handler ggrpc.UnaryHandler) (any, error) {
	if err := a.check(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a grpcAuth) stream(srv any, ss ggrpc.ServerStream, _ *ggrpc.StreamServerInfo, handler ggrpc.StreamHandler) error {
	if err := a.check(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}

// serverOptions returns the gRPC server options of the engine, with token
// verification when verify is set. Keepalive enforcement is grpc-go's
// default (a client ping at most every 5 minutes, none without an open
// call), the policy grpc-java and gRPC C-core servers default to as well,
// so that executors are tested against what a real engine permits.
func serverOptions(engine *Engine, verify func(string) error) []ggrpc.ServerOption {
	var options []ggrpc.ServerOption
	if verify == nil {
		return options
	}
	auth := grpcAuth{engine: engine, verify: verify}
	return append(options, ggrpc.ChainUnaryInterceptor(auth.unary), ggrpc.ChainStreamInterceptor(auth.stream))
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
