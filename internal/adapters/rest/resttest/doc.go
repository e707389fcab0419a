// Package resttest is the engine side of the HTTP wire contract
// (docs/protocol.md, section 5), for the tests of the executor's HTTP adapters
// (internal/adapters/rest) and of the service wired with them: a thin layer
// over internal/engine/restengine, the engine side the reference engine
// serves too, that records every request and injects faults.
//
// A Registry serves the engine's REST executor registry
// (restengine.Registry, over a store of its own) on a real listener on
// 127.0.0.1. It speaks JSON only, with restengine's ExecutorInfo type:
// converting to and from internal/domain is the adapter's job, and is
// exactly what the tests check. It never imports the adapter.
//
// What it does, per route (the rules of the protocol's routes are
// restengine's):
//   - POST /api/v1/executors stores the ExecutorInfo of the body, replacing
//     an earlier one of the same executorId, counts the registration
//     (RegisterCalls) and answers 200 with the stored info. A body that is
//     not an ExecutorInfo, has no executorId or executorType, or names a
//     communicationType other than GRPC, KAFKA, REST or LOCAL is answered
//     400.
//   - POST /api/v1/executors/{id}/heartbeat records the heartbeat of a known
//     executor and answers 200 with no body; an unknown id is answered 404.
//     With GamelanMode an unknown id is answered 200 too (and not
//     recorded), as the Gamelan engine does, so that only the lookup below
//     tells the executor it was forgotten.
//   - DELETE /api/v1/executors/{id} removes the executor and answers 204, or
//     404 when the id is unknown.
//   - GET /api/v1/executors lists every executor (ordered by id); GET
//     /api/v1/executors/{id} answers one, or 404; GET
//     /api/v1/executors/healthy lists those registered or heartbeating within
//     the last HealthyWithin (60s by default).
//   - Any other method on these paths is answered 405, any other path 404
//     (before authentication).
//
// Records. Every request is recorded when it arrives (Requests): method,
// path, executor id, Authorization header and arrival time, and when it
// ends, the status answered (0 when it was never answered: the client gave
// up or the registry stopped first). Forget drops an executor as an engine
// restart or expiry would, keeping its records. Changed and WaitFor wake on
// every change of state or record, so tests wait on conditions without
// polling.
//
// Faults. Applied in this order to every request after it is recorded:
//   - Hang(d) holds each request arriving while it is in force for d before
//     handling it, or until the client gives up or the registry stops, to
//     make clients time out.
//   - FailNext(n, status) answers the next n requests with status and a
//     short JSON body (FailNextWithBody chooses the body).
//   - WithAuth's hook verifies the bearer token of a request to one of the
//     routes above; a failure is answered 401 and counted (Refused).
//   - FailHeartbeats(status) answers every heartbeat with status until it is
//     cleared, whatever the registry knows.
//
// Lifecycle. Start serves on a free port of 127.0.0.1 and registers Close as
// a cleanup. Stop is a hard stop: the listener and every connection close,
// held requests are released unanswered, and Stop returns once every handler
// has returned, so that nothing is recorded or answered afterwards; clients
// see connection errors. Restart serves again on the same port with the
// state intact (registrations, records, faults in force).
//
// Dispatch. PostTask (restengine.PostTask) is the other direction: it posts a
// task to an executor's REST intake the way Gamelan's REST dispatcher does,
// headers first (X-Executor-Id, X-Run-Id, X-Node-Id, X-Attempt,
// X-Idempotency-Key, X-Signature) with an optional JSON body.
//
// Every method is safe for concurrent use; Start and Restart take a
// testing.TB and must be called from the test's goroutine. Records are kept
// without bound: a Registry serves one test.
package resttest
