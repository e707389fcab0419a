package component

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/gamelan-go/executor/internal/adapters/grpc/grpctest"
	"github.com/gamelan-go/executor/internal/adapters/rest/resttest"
	gamelanv1 "github.com/gamelan-go/executor/internal/gen/gamelan/grpc/v1"
	"github.com/gamelan-go/executor/internal/security/securitytest"
	"github.com/gamelan-go/executor/test/testkit"
)

// The JWT attack table of issue 14 (the OWASP test cases for JSON Web
// Tokens), run against every inbound surface of the running service that
// checks tokens: the gRPC push Execute call and the REST intake, both
// through the real service on 127.0.0.1. The protocol answers a refused push
// with ack code 401 (an ExecutionAck, not a gRPC status: docs/protocol.md,
// section 2) and a refused REST post with HTTP 401.

// attackJWTAudience is the audience the service expects on inbound tokens
// (JWT_INBOUND_AUDIENCE's default).
const attackJWTAudience = "gamelan-executor"

// attackSegment is the base64url (unpadded) encoding of v as JSON.
func attackSegment(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// attackSign builds a compact JWS by hand, so that every field an attacker
// controls can be set: header and claims as given, and an HMAC of newHash
// under key as the signature.
func attackSign(t *testing.T, header, claims map[string]any, key []byte, newHash func() hash.Hash) string {
	t.Helper()
	input := attackSegment(t, header) + "." + attackSegment(t, claims)
	mac := hmac.New(newHash, key)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// attackClaims are the claims of a token the service accepts (the engine's
// issuer, the service's audience, valid now), changed by change.
func attackClaims(change func(c map[string]any)) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{
		"iss": engineIssuer, "sub": "gamelan-engine", "aud": []string{attackJWTAudience},
		"iat": now, "exp": now + 300, "jti": fmt.Sprintf("attack-%d", time.Now().UnixNano()),
	}
	if change != nil {
		change(c)
	}
	return c
}

// attackHS256 is the header of the tokens the service accepts.
func attackHS256() map[string]any { return map[string]any{"alg": "HS256", "typ": "JWT"} }

// attackSHA256, attackSHA384 and attackSHA512 are the hash constructors of
// the type attackSign takes.
func attackSHA256() hash.Hash { return sha256.New() }
func attackSHA384() hash.Hash { return sha512.New384() }
func attackSHA512() hash.Hash { return sha512.New() }

// attackCase is one attack: the values of the Authorization header (gRPC
// metadata "authorization"), none when nil.
type attackCase struct {
	name          string
	authorization []string
}

// attackJWTCases returns the attack table for a service whose inbound tokens
// are signed with secret; valid is a token it accepts.
func attackJWTCases(t *testing.T, secret []byte, valid string) []attackCase {
	t.Helper()
	bearer := func(token string) []string { return []string{"Bearer " + token} }
	sign := func(header map[string]any, change func(map[string]any)) string {
		return attackSign(t, header, attackClaims(change), secret, attackSHA256)
	}
	validParts := strings.Split(valid, ".")
	require.Len(t, validParts, 3)
	otherSecret := securitytest.Secret(t)

	var cases []attackCase
	// alg none in every spelling, each with an empty signature, with the
	// signature of a valid token kept, and with no trailing dot.
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		input := attackSegment(t, map[string]any{"alg": alg, "typ": "JWT"}) + "." + attackSegment(t, attackClaims(nil))
		cases = append(cases,
			attackCase{"alg " + alg + ", empty signature", bearer(input + ".")},
			attackCase{"alg " + alg + ", signature of a valid token", bearer(input + "." + validParts[2])},
			attackCase{"alg " + alg + ", no trailing dot", bearer(input)},
		)
	}
	// The valid token's claims under alg none: a payload the service would
	// accept, were the signature not required.
	cases = append(cases, attackCase{"alg none over the valid token's claims",
		bearer(attackSegment(t, map[string]any{"alg": "none"}) + "." + validParts[1] + ".")})

	oversized := attackSign(t, attackHS256(), attackClaims(func(c map[string]any) {
		c["pad"] = strings.Repeat("p", 3<<18) // 768 KiB of JSON: 1 MiB once encoded
	}), secret, attackSHA256)
	require.GreaterOrEqual(t, len(oversized), 1<<20)

	tampered := attackSegment(t, func() map[string]any {
		raw, err := base64.RawURLEncoding.DecodeString(validParts[1])
		require.NoError(t, err)
		var c map[string]any
		require.NoError(t, json.Unmarshal(raw, &c))
		c["sub"] = "admin"
		return c
	}())

	cases = append(cases,
		attackCase{"HS256 signed with a wrong secret", bearer(attackSign(t, attackHS256(), attackClaims(nil), otherSecret, attackSHA256))},
		// Algorithm confusion: the verifier must pin HS256.
		attackCase{"RS256 header with an HMAC signature", bearer(sign(map[string]any{"alg": "RS256", "typ": "JWT"}, nil))},
		attackCase{"HS384 with the right secret", bearer(attackSign(t, map[string]any{"alg": "HS384", "typ": "JWT"}, attackClaims(nil), secret, attackSHA384))},
		attackCase{"HS512 with the right secret", bearer(attackSign(t, map[string]any{"alg": "HS512", "typ": "JWT"}, attackClaims(nil), secret, attackSHA512))},
		attackCase{"alg hs256 in lower case", bearer(sign(map[string]any{"alg": "hs256", "typ": "JWT"}, nil))},
		attackCase{"HS256 header with an HS512 signature", bearer(attackSign(t, attackHS256(), attackClaims(nil), secret, attackSHA512))},
		// Keys the token brings along must never be used (jwk, jku, kid).
		attackCase{"embedded jwk signed with the attacker's key", bearer(attackSign(t, map[string]any{"alg": "HS256", "typ": "JWT",
			"jwk": map[string]any{"kty": "oct", "k": base64.RawURLEncoding.EncodeToString(otherSecret)}}, attackClaims(nil), otherSecret, attackSHA256))},
		attackCase{"jku pointing elsewhere", bearer(attackSign(t, map[string]any{"alg": "HS256", "typ": "JWT",
			"jku": "http://127.0.0.1:1/keys.json"}, attackClaims(nil), otherSecret, attackSHA256))},
		attackCase{"kid /dev/null signed with an empty key", bearer(attackSign(t, map[string]any{"alg": "HS256", "typ": "JWT",
			"kid": "../../../../dev/null"}, attackClaims(nil), []byte{}, attackSHA256))},
		// Claims.
		attackCase{"expired", bearer(sign(attackHS256(), func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
		}))},
		attackCase{"nbf in the future", bearer(sign(attackHS256(), func(c map[string]any) { c["nbf"] = time.Now().Add(10 * time.Minute).Unix() }))},
		attackCase{"iat in the future", bearer(sign(attackHS256(), func(c map[string]any) {
			c["iat"], c["exp"] = time.Now().Add(10*time.Minute).Unix(), time.Now().Add(15*time.Minute).Unix()
		}))},
		attackCase{"wrong issuer", bearer(sign(attackHS256(), func(c map[string]any) { c["iss"] = "someone-else" }))},
		attackCase{"the executor's own issuer", bearer(sign(attackHS256(), func(c map[string]any) { c["iss"] = executorIssuer }))},
		attackCase{"wrong audience", bearer(sign(attackHS256(), func(c map[string]any) { c["aud"] = []string{"gamelan-engine"} }))},
		attackCase{"no audience", bearer(sign(attackHS256(), func(c map[string]any) { delete(c, "aud") }))},
		attackCase{"payload tampered after signing", bearer(validParts[0] + "." + tampered + "." + validParts[2])},
		attackCase{"signature stripped", bearer(validParts[0] + "." + validParts[1] + ".")},
		attackCase{"missing exp", bearer(sign(attackHS256(), func(c map[string]any) { delete(c, "exp") }))},
		attackCase{"missing sub", bearer(sign(attackHS256(), func(c map[string]any) { delete(c, "sub") }))},
		attackCase{"empty sub", bearer(sign(attackHS256(), func(c map[string]any) { c["sub"] = "" }))},
		attackCase{"exp not a number", bearer(sign(attackHS256(), func(c map[string]any) { c["exp"] = "never" }))},
		attackCase{"oversized token (1 MiB, correctly signed)", bearer(oversized)},
		attackCase{"JSON serialization of a valid token", bearer(`{"protected":"` + validParts[0] + `","payload":"` + validParts[1] + `","signature":"` + validParts[2] + `"}`)},
		attackCase{"padded base64 segments", bearer(validParts[0] + "==." + validParts[1] + "." + validParts[2])},
		// Schemes.
		attackCase{"no authorization", nil},
		attackCase{"Basic scheme", []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("gamelan-engine:"+string(secret)))}},
		attackCase{"Token scheme with a valid token", []string{"Token " + valid}},
		attackCase{"bare valid token without a scheme", []string{valid}},
		attackCase{"Bearer with no token", []string{"Bearer"}},
		attackCase{"Bearer and spaces", []string{"Bearer    "}},
		attackCase{"Bearer, valid token, trailing garbage", []string{"Bearer " + valid + " x"}},
		attackCase{"two Bearer tokens in one value", []string{"Bearer " + valid + ", Bearer " + valid}},
		attackCase{"two values, valid first", []string{"Bearer " + valid, "Bearer not-a-token"}},
		attackCase{"two values, valid second", []string{"Bearer not-a-token", "Bearer " + valid}},
		attackCase{"two values, both valid", []string{"Bearer " + valid, "Bearer " + valid}},
	)
	return cases
}

// attackJWTEnv serves calculate-tax over gRPC push and notification-sender
// over the REST intake (results of both through ReportResults), with inbound
// tokens required, at debug level so that every task run is logged.
func attackJWTEnv(engineAddr, secret string) map[string]string {
	vars := twoTypesEnv(engineAddr, "push")
	vars["GAMELAN_EXECUTOR_TRANSPORT_OVERRIDES"] = "notification-sender=rest"
	vars["GAMELAN_EXECUTOR_REST_HOST"] = "127.0.0.1"
	vars["GAMELAN_EXECUTOR_REST_PORT"] = "0"
	vars["GAMELAN_EXECUTOR_REST_RESULT_SINK"] = "grpc"
	vars["GAMELAN_EXECUTOR_JWT_SECRET"] = secret
	return vars
}

// attackPush pushes a calculate-tax task with the given authorization
// values.
func attackPush(t *testing.T, engine *grpctest.Engine, endpoint, run, node string, authorization []string) (accepted bool, code int, message string) {
	t.Helper()
	ctx := deadline(t, conditionTimeout)
	for _, value := range authorization {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", value)
	}
	ack, err := engine.Push(ctx, endpoint, taxPush(run, node, "10"))
	require.NoError(t, err, "push %s", node)
	return ack.GetAccepted(), int(ack.GetCode()), ack.GetMessage()
}

// attackPost posts a notification-sender task to the REST intake with the
// given authorization values.
func attackPost(t *testing.T, endpoint, run, node string, authorization []string) resttest.Answer {
	t.Helper()
	post := resttest.TaskPost{
		ExecutorID: notificationExecutorID, RunID: run, NodeID: node, Attempt: 1,
		IdempotencyKey: resultKey(run, node),
		Body:           []byte(`{"recipient": "ops@example.com", "message": "hello"}`),
	}
	if authorization != nil {
		post.Header = http.Header{"Authorization": authorization}
	}
	answer, err := resttest.PostTask(deadline(t, conditionTimeout), nil, endpoint, post)
	require.NoError(t, err, "post %s", node)
	return answer
}

// TestAttackJWTOnEveryInboundSurface runs the attack table against the push
// Execute call and the REST intake of one running service. Every attack is
// refused with 401 and a short message that quotes nothing of the token, no
// handler runs (no "task finished" line, no result reaches the engine: the
// Outcome counts any result of a refused task as unexpected), the refusals
// write a bounded amount of log that quotes no token, and a valid token
// sent afterwards on each surface is still accepted and answered.
func TestAttackJWTOnEveryInboundSurface(t *testing.T) {
	t.Parallel()
	secret := printableSecret(t)
	engine := grpctest.NewEngine()
	addr := engine.Start(t)
	r := startService(t, attackJWTEnv(addr, secret))
	pushEndpoint := waitForServing(t, engine, r, taxExecutorID).GetEndpoint()
	restEndpoint := waitForRegistration(t, engine, notificationExecutorID).GetEndpoint()

	valid := engineToken(t, engineMinterConfig(secret))
	cases := attackJWTCases(t, []byte(secret), valid)
	outcome := &testkit.Outcome{Scenario: "JWT attacks on push and REST"}
	const run = "run-attack-jwt"
	logsBefore := len(r.logs.text())
	accepted := 0
	// The slowest refusal is reported, not asserted: the machine is shared.
	var slowest time.Duration
	var slowestCase string
	for i, tc := range cases {
		node := fmt.Sprintf("attack-%02d", i)
		began := time.Now()
		ok, code, message := attackPush(t, engine, pushEndpoint, run, "push-"+node, tc.authorization)
		if ok || code != http.StatusUnauthorized {
			accepted++
			t.Errorf("push, %s: accepted=%v code=%d message=%.200q, want refused with 401", tc.name, ok, code, message)
		}
		attackCheckMessage(t, "push, "+tc.name, message, tc.authorization, secret)

		answer := attackPost(t, restEndpoint, run, "rest-"+node, tc.authorization)
		if answer.Status != http.StatusUnauthorized {
			accepted++
			t.Errorf("REST, %s: status %d body %.200q, want 401", tc.name, answer.Status, answer.Body)
		}
		attackCheckMessage(t, "REST, "+tc.name, answer.Body, tc.authorization, secret)
		if took := time.Since(began); took > slowest {
			slowest, slowestCase = took, tc.name
		}
	}
	t.Logf("slowest refusal (push and REST): %s, %s", slowest, slowestCase)
	refusalLogs := len(r.logs.text()) - logsBefore
	t.Logf("%d attacks on 2 surfaces wrote %d bytes of logs", len(cases), refusalLogs)
	assert.Less(t, refusalLogs, 64<<10, "the refusals' logs are not bounded")
	r.logs.waitFor(t, "push task refused: authentication failed")
	r.logs.waitFor(t, "rest task refused: authentication failed")

	// A valid token still works afterwards, on both surfaces.
	ok, code, message := attackPush(t, engine, pushEndpoint, run, "push-valid", []string{"Bearer " + valid})
	require.True(t, ok, "the valid push after the attacks: %d %s", code, message)
	answer := attackPost(t, restEndpoint, run, "rest-valid", []string{"Bearer " + valid})
	require.Equal(t, http.StatusAccepted, answer.Status, answer.Body)
	outcome.Submitted(resultKey(run, "push-valid"), resultKey(run, "rest-valid"))
	require.Eventually(t, func() bool {
		unique := engine.UniqueResults()
		return unique[resultKey(run, "push-valid")] != nil && unique[resultKey(run, "rest-valid")] != nil
	}, conditionTimeout, conditionTick, "the valid tasks were not answered")
	checkTaxResult(t, engine.UniqueResults()[resultKey(run, "push-valid")], run, "push-valid", "10")
	assert.Equal(t, gamelanv1.TaskStatus_TASK_STATUS_COMPLETED, engine.UniqueResults()[resultKey(run, "rest-valid")].GetStatus())

	// Nothing ran but the two valid tasks.
	require.Eventually(t, func() bool { return len(finishedNodes(r.logs, run)) >= 2 }, conditionTimeout, conditionTick)
	assert.Equal(t, map[string]bool{"push-valid": true, "rest-valid": true}, finishedNodes(r.logs, run), "a refused task ran")
	require.NoError(t, r.stop(t))
	for _, res := range engine.Results() {
		outcome.Answer(res.GetRunId() + ":" + res.GetNodeId() + ":" + fmt.Sprint(res.GetAttempt()))
	}
	outcome.Notes = map[string]any{"attacks": len(cases), "surfaces": 2, "accepted": accepted, "refusalLogBytes": refusalLogs,
		"slowestRefusalMs": slowest.Milliseconds(), "slowestRefusal": slowestCase}
	outcome.Check(t)

	logs := r.logs.text()
	assert.NotContains(t, logs, secret, "the secret is logged")
	for _, tc := range cases {
		attackCheckNoToken(t, "logs after "+tc.name, logs, tc.authorization)
	}
	attackCheckNoToken(t, "logs", logs, []string{"Bearer " + valid})
}

// attackCheckMessage checks that the answer to a refused call is short and
// quotes neither the secret nor any part of the token it refused.
func attackCheckMessage(t *testing.T, what, message string, authorization []string, secret string) {
	t.Helper()
	assert.Less(t, len(message), 256, "%s: the refusal is not short: %.300q", what, message)
	assert.NotContains(t, message, secret, "%s: the refusal quotes the secret", what)
	attackCheckNoToken(t, what, message, authorization)
}

// attackCheckNoToken fails when text contains a long piece of one of the
// authorization values: the value itself, or one of its dot-separated
// segments of 16 characters or more (headers as short as {"alg":"none"}
// encode to fewer, and are the same in every token).
func attackCheckNoToken(t *testing.T, what, text string, authorization []string) {
	t.Helper()
	for _, value := range authorization {
		for _, field := range strings.Fields(value) {
			for segment := range strings.SplitSeq(field, ".") {
				if len(segment) >= 16 && strings.Contains(text, segment) {
					t.Errorf("%s: %.60q... of the token appears", what, segment)
				}
			}
		}
	}
}
