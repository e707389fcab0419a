// Package security holds the executor's authentication and transport
// security (docs/protocol.md, section 6): the HS256 tokens it sends to the engine,
// the verification of the tokens it receives, gRPC call credentials, and TLS
// and mutual TLS configurations loaded from PEM files.
//
// # Tokens
//
// A Minter signs tokens with the secret shared with the engine (HS256 only,
// secret of at least MinSecretBytes). Every token carries:
//   - iss: MinterConfig.Issuer;
//   - sub: the executor id (see WithSubject), else MinterConfig.Subject;
//   - aud: MinterConfig.Audience, as a one-element array;
//   - iat: the minting time, rounded down to the second;
//   - exp: iat + MinterConfig.TTL (at least MinTTL, five minutes by default
//     in the protocol), rounded down to the second;
//   - jti: a random identifier, unique per token;
//   - executor_name, executor_version: strings, possibly empty;
//   - executor_types: an array of strings, possibly empty.
//
// # Refresh rule
//
// Minter.Token returns the cached token of a subject while at least a third
// of its TTL is left and mints a fresh one otherwise, so every token handed
// out stays valid for at least TTL/3 - enough to cover clock skew and a slow
// call. Tokens travel in call metadata and are checked when a call or stream
// starts, so a long-lived stream is closed and reopened after
// Minter.RefreshAfter (a third of the TTL), which makes it pick up a
// freshly minted token.
//
// # Verification
//
// Verifier.Verify accepts a token only if it is a compact JWS whose header
// says alg HS256 (alg none and every other algorithm are refused before the
// signature is looked at, even with the right key), its HMAC matches the
// secret, iss is the expected issuer, aud contains the expected audience
// when one is configured, sub and exp are present, and the token is inside
// its validity window (exp not past, iat and nbf not in the future, each
// with VerifierConfig.Leeway of tolerance). SingleBearerToken takes the
// token from a request's authorization values only when there is exactly
// one. Every refusal wraps
// domain.ErrUnauthenticated with a short fixed reason, which adapters map
// to gRPC Unauthenticated or HTTP 401.
//
// # Guarantees
//
//   - Secrets and tokens never appear in errors: reasons are fixed texts,
//     and configuration errors give the secret's length, not its value.
//   - Minter and Verifier keep private copies of the secret and of
//     ExecutorTypes, and are safe for concurrent use. Concurrent Token calls
//     for one subject mint at most one token between them.
//   - The token cache of a Minter holds one token per subject and at most a
//     few hundred subjects; past that, tokens for new subjects are minted on
//     every call.
//   - TLS configurations require TLS 1.2 or later. A server with a client CA
//     file requires and verifies client certificates. Errors name the file
//     and the problem, never the file's contents.
//
// Package securitytest generates the certificates and secrets the tests of
// this package and of the adapters use.
package security
