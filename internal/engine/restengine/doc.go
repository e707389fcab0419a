// Package restengine is the engine side of the HTTP wire protocol
// (docs/protocol.md, section 5): the one implementation that the reference
// engine (internal/devengine) serves and that the tests of the executor's
// HTTP adapters drive through internal/adapters/rest/resttest. A change to
// the engine's part of the REST protocol is made here.
//
// It speaks JSON with its own ExecutorInfo type and never imports the
// executor's adapter (internal/adapters/rest), so that the tests comparing
// the two sides compare two readings of the protocol.
//
// The registry. Registry.Handle adds the routes executors call to a
// ServeMux; what is stored is a Store's:
//   - POST /api/v1/executors decodes the ExecutorInfo of the body, which
//     needs an executorId, an executorType and a communicationType of GRPC,
//     KAFKA, REST or LOCAL (else 400), has the Store register it (registering
//     again replaces), and answers 200 with what the Store returns.
//   - POST /api/v1/executors/{id}/heartbeat answers 200 with no body;
//     ErrUnknownExecutor from the Store answers 404, so that the executor
//     registers again (an engine that answers 200 instead, as Gamelan does,
//     leaves the look-up below to tell it).
//   - GET /api/v1/executors/{id} answers what the Store looks up, or 404.
//   - DELETE /api/v1/executors/{id} answers 204, or 404 when the Store did
//     not know the executor.
//
// A StatusError from the Store answers its status. With Registry.Verify set,
// every one of these calls must carry a bearer token that passes it, else
// 401; Registry.Authenticate puts the same check on other routes.
//
// Dispatch. PostTask is the other direction: it posts a task to an
// executor's REST intake the way Gamelan's REST dispatcher does, headers
// first (X-Executor-Id, X-Run-Id, X-Node-Id, X-Attempt, X-Idempotency-Key,
// X-Signature) with an optional JSON body.
package restengine
