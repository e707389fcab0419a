// Package rest talks HTTP to an engine's REST registry and takes tasks
// over REST (docs/protocol.md, section 5):
//
//   - Registrar: POST /api/v1/executors with ExecutorInfo for each hosted
//     type, DELETE /api/v1/executors/{id} on stop.
//   - Heartbeater: POST /api/v1/executors/{id}/heartbeat, then GET
//     /api/v1/executors/{id}; a 404 or 410 from either means the engine forgot
//     the executor (the Gamelan engine answers success to heartbeats from
//     executors it forgot), and the runtime re-registers.
//   - Intake: the REST task endpoint Gamelan's REST dispatcher posts to,
//     working from the headers alone and taking a JSON body when present.
//
// Against the Gamelan engine this is how Kafka executors get registered:
// that engine reads no registration topic. Every request carries "Bearer
// <JWT>" when tokens are configured, has a timeout, and is retried with
// jittered backoff on network errors, 5xx and 429 (every call here is
// idempotent); a non-2xx answer is an error quoting the status and the start
// of the body. Errors show the engine's URL with its password redacted.
// net/http only, with a tuned transport.
//
// Package resttest is the engine side of this wire for tests: a REST
// registry with fault injection, and the REST dispatcher's task posts.
package rest
