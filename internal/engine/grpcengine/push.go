package grpcengine

import (
	"context"
	"encoding/base64"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	dispatcherpb "github.com/gamelan-go/executor/internal/gen/gamelan/dispatcher"
)

// Push calls Execute on the executor serving at executorAddr, as the Gamelan
// engine delivers tasks to gRPC executors, and returns its acknowledgement.
// The connection to each address is made on first use (plaintext, or as
// Config.PushDialOptions says), kept for later pushes, and closed by Close.
// opts apply to this call only: grpc.PerRPCCredentials carries a token, and
// outgoing metadata in ctx works too. Push does not need the Server to be
// serving.
func (s *Server) Push(ctx context.Context, executorAddr string, req *dispatcherpb.ExecutionRequest, opts ...grpc.CallOption) (*dispatcherpb.ExecutionAck, error) {
	conn, err := s.pushConn(executorAddr)
	if err != nil {
		return nil, err
	}
	ack, err := dispatcherpb.NewExecutorClient(conn).Execute(ctx, req, opts...)
	if err != nil {
		return nil, fmt.Errorf("push %s to %s: %w", req.GetIdempotencyKey(), executorAddr, err)
	}
	return ack, nil
}

func (s *Server) pushConn(addr string) (*grpc.ClientConn, error) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	if conn, ok := s.pushConns[addr]; ok {
		return conn, nil
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, s.cfg.PushDialOptions...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("push: connect to %s: %w", addr, err)
	}
	s.pushConns[addr] = conn
	return conn, nil
}

// Signature returns the signature the Gamelan engine puts on a push request
// (and its REST dispatcher in X-Signature): standard Base64 of runID
// immediately followed by executorID.
func Signature(runID, executorID string) string {
	return base64.StdEncoding.EncodeToString([]byte(runID + executorID))
}
