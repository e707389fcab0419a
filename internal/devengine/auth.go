package devengine

import (
	"context"

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
// verification when verify is set.
func serverOptions(engine *Engine, verify func(string) error) []ggrpc.ServerOption {
	if verify == nil {
		return nil
	}
	auth := grpcAuth{engine: engine, verify: verify}
	return []ggrpc.ServerOption{ggrpc.ChainUnaryInterceptor(auth.unary), ggrpc.ChainStreamInterceptor(auth.stream)}
}
