package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
)

func init() {
	register(scenario{name: "engine/heartbeats", smoke: true, run: runEngineHeartbeats})
}

// The control-plane load of engine/heartbeats: simExecutors executors,
// each heartbeating every second, over simConns shared connections.
const (
	simExecutors = 500
	simConns     = 4
)

// runEngineHeartbeats measures the reference engine's CPU while
// simExecutors simulated executors, registered over gRPC, heartbeat every
// second: the engine's CPU time over the wall time, as a percentage of one
// core. The baseline is the same load on a bare grpc-go ExecutorService
// that answers and remembers nothing (this binary with -role raw-engine).
func runEngineHeartbeats(ctx context.Context, o *options) ([]Row, error) {
	seconds := 20
	if o.smoke {
		seconds = 10
	}
	load := time.Duration(seconds) * time.Second
	engine, grpcAddr, err := startDevEngine(ctx, o.devengine)
	if err != nil {
		return nil, err
	}
	idle, err := idleCPU(ctx, engine, load/4)
	if err != nil {
		engine.kill()
		return nil, err
	}
	got, err := heartbeatLoad(ctx, engine, grpcAddr, seconds)
	if err = errors.Join(err, engine.stop(30*time.Second)); err != nil {
		return nil, fmt.Errorf("devengine: %w", err)
	}
	raw, rawAddr, err := startRole(ctx, "raw-engine")
	if err != nil {
		return nil, err
	}
	base, err := heartbeatLoad(ctx, raw, rawAddr, seconds)
	if err = errors.Join(err, raw.stop(30*time.Second)); err != nil {
		return nil, fmt.Errorf("raw-engine: %w", err)
	}
	return []Row{{Section: footprintSection, Name: fmt.Sprintf("engine CPU, %d executors heartbeating every 1 s", simExecutors), Unit: "% of a core",
		Value: got.cpu, Baseline: base.cpu, Target: Target{AtMost, 5},
		Note: fmt.Sprintf("reference engine (devengine, its embedded broker unused; %.1f%% idle) vs a bare grpc-go server: CPU time over %s, %d heartbeats on %d connections; heartbeat p50 %.2f ms (bare %.2f), p99 %.2f ms (bare %.2f)",
			idle, load, simExecutors*seconds, simConns, got.p.P50, base.p.P50, got.p.P99, base.p.P99)}}, nil
}

// heartbeatRun is what heartbeatLoad measured.
type heartbeatRun struct {
	cpu float64 // the engine's CPU time over the wall time, in % of a core
	p   Percentiles
}

// heartbeatLoad registers simExecutors executors with the engine p serving
// at addr, then sends each a heartbeat every second for seconds, and
// measures p's CPU meanwhile.
func heartbeatLoad(ctx context.Context, p *proc, addr string, seconds int) (heartbeatRun, error) {
	clients := make([]gamelanv1.ExecutorServiceClient, simConns)
	for i := range clients {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return heartbeatRun{}, err
		}
		defer conn.Close()
		clients[i] = gamelanv1.NewExecutorServiceClient(conn)
	}
	simID := func(i int) string { return fmt.Sprintf("sim-%03d", i%simExecutors) }
	for i := range simExecutors {
		_, err := clients[i%simConns].RegisterExecutor(ctx, &gamelanv1.RegisterExecutorRequest{
			ExecutorId: simID(i), ExecutorType: "sim", CommunicationType: gamelanv1.CommunicationType_COMMUNICATION_TYPE_GRPC,
			Endpoint: "127.0.0.1:1", SupportedNodeTypes: []string{"sim"}, MaxConcurrentTasks: 10,
		})
		if err != nil {
			return heartbeatRun{}, fmt.Errorf("register %s: %w", simID(i), err)
		}
	}
	// One heartbeat every 2 ms, round-robin over the executors: each
	// executor's every second, spread evenly as jitter spreads real ones.
	n := simExecutors * seconds
	rec := newRecorder(n, simExecutors)
	var failed atomic.Int64
	cpu0, err := p.cpuTime()
	if err != nil {
		return heartbeatRun{}, err
	}
	openLoop(ctx, rec, n, true, func(i int) {
		_, err := clients[i%simConns].Heartbeat(ctx, &gamelanv1.HeartbeatRequest{
			ExecutorId: simID(i), Health: &gamelanv1.ExecutorHealth{Status: "HEALTHY"},
		})
		if err != nil {
			failed.Add(1)
			return
		}
		rec.answer(i)
	})
	wall := time.Since(rec.start)
	cpu1, err := p.cpuTime()
	if err != nil {
		return heartbeatRun{}, err
	}
	if f := failed.Load(); f > 0 {
		return heartbeatRun{}, fmt.Errorf("%d of %d heartbeats failed", f, n)
	}
	return heartbeatRun{cpu: float64(cpu1-cpu0) / float64(wall) * 100, p: rec.percentiles()}, nil
}

// startDevEngine starts the reference engine on free ports of 127.0.0.1,
// with no executor, and returns once its HTTP API answers.
func startDevEngine(ctx context.Context, path string) (*proc, string, error) {
	// The three listeners stay open until all three ports are known, so
	// that no two of them are the same.
	var addrs [3]string
	var listeners []net.Listener
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		listeners = append(listeners, l)
		addrs[i] = l.Addr().String()
	}
	for _, l := range listeners {
		l.Close()
	}
	grpcAddr, httpAddr, kafkaAddr := addrs[0], addrs[1], addrs[2]
	p, err := startProc("devengine", path, nil, "-grpc", grpcAddr, "-http", httpAddr, "-kafka", kafkaAddr, "-log-level", "warn")
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, grpcAddr, nil
			}
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, "", fmt.Errorf("devengine not up within 30 s: %v", err)
		}
		select {
		case <-tick.C:
		case <-p.exited:
			return nil, "", fmt.Errorf("devengine exited: %v", p.err)
		case <-ctx.Done():
			p.kill()
			return nil, "", context.Cause(ctx)
		}
	}
}

// idleCPU is p's CPU time over d of doing nothing, as a percentage of one
// core.
func idleCPU(ctx context.Context, p *proc, d time.Duration) (float64, error) {
	cpu0, err := p.cpuTime()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
	cpu1, err := p.cpuTime()
	return float64(cpu1-cpu0) / float64(time.Since(start)) * 100, err
}

func init() { roles["raw-engine"] = rawEngine }

// rawEngine is engine/heartbeats' baseline: a bare grpc-go
// ExecutorService on 127.0.0.1 that accepts every registration and
// heartbeat and keeps nothing. It prints its address.
func rawEngine(ctx context.Context, _ []string, stdout io.Writer) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	gamelanv1.RegisterExecutorServiceServer(server, bareEngine{})
	fmt.Fprintln(stdout, lis.Addr().String())
	context.AfterFunc(ctx, server.GracefulStop)
	return server.Serve(lis)
}

// bareEngine answers registrations and heartbeats, and nothing else.
type bareEngine struct {
	gamelanv1.UnimplementedExecutorServiceServer
}

// RegisterExecutor implements gamelanv1.ExecutorServiceServer.
func (bareEngine) RegisterExecutor(_ context.Context, req *gamelanv1.RegisterExecutorRequest) (*gamelanv1.ExecutorRegistration, error) {
	return &gamelanv1.ExecutorRegistration{ExecutorId: req.GetExecutorId(), Status: "REGISTERED"}, nil
}

// Heartbeat implements gamelanv1.ExecutorServiceServer.
func (bareEngine) Heartbeat(context.Context, *gamelanv1.HeartbeatRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
