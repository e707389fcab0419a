// Package grpc is the gRPC transport of the executor service, speaking the
// Gamelan protocol (docs/protocol.md, "gRPC" and "Tokens and TLS") to any
// engine that serves tech.kayys.gamelan.grpc.v1.ExecutorService:
//
//   - Registrar and Heartbeater call RegisterExecutor, UnregisterExecutor and
//     Heartbeat. An empty or "REGISTERED" registration status is success; a
//     NotFound heartbeat means the engine forgot the executor
//     (domain.ErrNotRegistered), and the runtime re-registers.
//   - PushServer serves tech.kayys.gamelan.dispatcher.Executor/Execute, the
//     way the Gamelan engine delivers tasks, plus the gRPC health service. It
//     acknowledges at once and answers 503 when full or draining, 400 when a
//     request is invalid, 401 when authentication fails; the runtime's
//     routing answers a task no hosted type may run FAILED NO_EXECUTOR.
//   - StreamSource (StreamTasks) and BidiSource (ExecuteStream) pull tasks
//     beside the push server, asking for no more than the runtime's free
//     capacity, reconnecting with jittered exponential backoff, never in a
//     hot loop.
//   - ResultSink sends results in short ReportResults streams; a batch is
//     delivered only when the engine's Empty arrives.
//   - ConnectionWatch reports signs that the engine may have forgotten the
//     executors (the connection remade, NotFound answers), so that the
//     runtime registers them again.
//
// Security: every outbound call carries a bearer token from the
// credentials in ClientConfig; long-lived streams are reopened within the
// token's lifetime. Inbound Execute calls are verified by
// ServerConfig.Authenticate when it is set. TLS and mutual TLS are
// configured with crypto/tls configs built by internal/security.
//
// Tuning: keepalive (by default no more often than default servers permit:
// after 5 minutes without traffic, never without an open call), max
// concurrent streams, flow-control window and max message size come from
// the configuration.
package grpc
