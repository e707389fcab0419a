package security_test

import (
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"hash"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

func newVerifier(t *testing.T, cfg security.VerifierConfig) *security.Verifier {
	t.Helper()
	verifier, err := security.NewVerifier(cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return verifier
}

func TestVerifierConfigValidate(t *testing.T) {
	secret := securitytest.Secret(t)
	cases := []struct {
		name string
		cfg  security.VerifierConfig
		want string
	}{
		{"short secret", security.VerifierConfig{Secret: secret[:16], Issuer: testIssuer}, "secret must be at least 32 bytes, got 16"},
		{"no issuer", security.VerifierConfig{Secret: secret}, "expected issuer is required"},
		{"negative leeway", security.VerifierConfig{Secret: secret, Issuer: testIssuer, Leeway: -time.Second}, "leeway must not be negative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := security.NewVerifier(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewVerifier() error = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), string(secret[:16])) {
				t.Fatal("configuration error contains the secret")
			}
		})
	}
}

func TestVerifyAcceptsMintedToken(t *testing.T) {
	clock := newFakeClock()
	secret := securitytest.Secret(t)
	minter := newMinter(t, minterConfig(t, secret, clock))
	token, err := minter.Token("executor-7")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	for _, audience := range []string{testAudience, ""} {
		verifier := newVerifier(t, security.VerifierConfig{Secret: secret, Issuer: testIssuer, Audience: audience, Now: clock.Now})
		claims, err := verifier.Verify(token)
		if err != nil {
			t.Fatalf("Verify with audience %q: %v", audience, err)
		}
		want := security.Claims{
			Subject:       "executor-7",
			Issuer:        testIssuer,
			ExecutorTypes: []string{"validate-order", "calculate-tax"},
			ExpiresAt:     clock.Now().Add(testTTL),
		}
		if claims.Subject != want.Subject || claims.Issuer != want.Issuer ||
			!slices.Equal(claims.ExecutorTypes, want.ExecutorTypes) || !claims.ExpiresAt.Equal(want.ExpiresAt) {
			t.Errorf("claims = %+v, want %+v", claims, want)
		}
	}
}

func TestVerifyTimeWindow(t *testing.T) {
	clock := newFakeClock()
	secret := securitytest.Secret(t)
	minter := newMinter(t, minterConfig(t, secret, clock))
	token, err := minter.Token("")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	verifierClock := newFakeClock()
	verifier := newVerifier(t, security.VerifierConfig{Secret: secret, Issuer: testIssuer, Leeway: 5 * time.Second, Now: verifierClock.Now})
	cases := []struct {
		name   string
		offset time.Duration // verifier clock relative to the minting time
		want   string        // "" when the token must be accepted
	}{
		{"issued within leeway in the future", -5 * time.Second, ""},
		{"issued beyond leeway in the future", -6 * time.Second, "token not yet valid"},
		{"just before exp", testTTL - time.Second, ""},
		{"past exp within leeway", testTTL + 4*time.Second, ""},
		{"past exp and leeway", testTTL + 5*time.Second, "token expired"},
		{"long expired", 24 * time.Hour, "token expired"},
	}
	start := verifierClock.Now()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			verifierClock.Advance(start.Add(tc.offset).Sub(verifierClock.Now()))
			_, err := verifier.Verify(token)
			checkVerifyError(t, err, tc.want, token, secret)
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	clock := newFakeClock()
	secret := securitytest.Secret(t)
	otherSecret := securitytest.Secret(t)
	minter := newMinter(t, minterConfig(t, secret, clock))
	good, err := minter.Token("executor-7")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	now := clock.Now().Unix()
	claims := func(change func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": testIssuer, "sub": "executor-7", "aud": []string{testAudience},
			"iat": now, "exp": now + 90, "jti": "j-1",
			"executor_types": []string{"validate-order"},
		}
		if change != nil {
			change(c)
		}
		return c
	}
	otherMinterConfig := minterConfig(t, otherSecret, clock)
	wrongSecretToken, err := newMinter(t, otherMinterConfig).Token("executor-7")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	wrongIssuerConfig := minterConfig(t, secret, clock)
	wrongIssuerConfig.Issuer = "someone-else"
	wrongIssuerToken, err := newMinter(t, wrongIssuerConfig).Token("executor-7")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	wrongAudienceConfig := minterConfig(t, secret, clock)
	wrongAudienceConfig.Audience = "another-engine"
	wrongAudienceToken, err := newMinter(t, wrongAudienceConfig).Token("executor-7")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	goodParts := strings.Split(good, ".")
	sha512New := func() hash.Hash { return sha512.New() }

	cases := []struct {
		name  string
		token string
		want  string
	}{
		{"empty", "", "missing token"},
		{"one segment", "garbage", "malformed token"},
		{"two segments", goodParts[0] + "." + goodParts[1], "malformed token"},
		{"four segments", good + ".extra", "malformed token"},
		{"header not base64", "!!!." + goodParts[1] + "." + goodParts[2], "malformed token"},
		{"header not JSON", base64.RawURLEncoding.EncodeToString([]byte("not json")) + "." + goodParts[1] + "." + goodParts[2], "malformed token"},
		{"header without alg", craftToken(t, map[string]any{"typ": "JWT"}, claims(nil), secret, sha256New), "malformed token"},
		{"JSON serialization", `{"payload":"` + goodParts[1] + `","protected":"` + goodParts[0] + `","signature":"` + goodParts[2] + `"}`, "malformed token"},
		{"payload not JSON", func() string {
			input := goodParts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("not json"))
			return input + "." + hmacSignature(input, secret, sha256New)
		}(), "malformed token"},
		{"executor_types not strings", craftToken(t, hs256(), claims(func(c map[string]any) { c["executor_types"] = 7 }), secret, sha256New), "malformed token"},
		{"too long", craftToken(t, hs256(), claims(func(c map[string]any) { c["pad"] = strings.Repeat("p", 9000) }), secret, sha256New), "malformed token"},
		{"wrong secret", wrongSecretToken, "bad signature"},
		{"tampered payload", goodParts[0] + "." + encodeSegment(t, claims(func(c map[string]any) { c["sub"] = "admin" })) + "." + goodParts[2], "bad signature"},
		{"signature stripped", goodParts[0] + "." + goodParts[1] + ".", "bad signature"},
		{"HS256 header with an HS512 signature", craftToken(t, hs256(), claims(nil), secret, sha512New), "bad signature"},
		{"alg none", craftToken(t, map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), nil, nil), "alg none not accepted"},
		{"alg None", craftToken(t, map[string]any{"alg": "None", "typ": "JWT"}, claims(nil), nil, nil), "alg none not accepted"},
		{"alg none with a signature", craftToken(t, map[string]any{"alg": "none"}, claims(nil), secret, sha256New), "alg none not accepted"},
		{"HS512 with the same secret", craftToken(t, map[string]any{"alg": "HS512", "typ": "JWT"}, claims(nil), secret, sha512New), "algorithm not accepted"},
		{"RS256 header", craftToken(t, map[string]any{"alg": "RS256"}, claims(nil), secret, sha256New), "algorithm not accepted"},
		{"wrong issuer", wrongIssuerToken, "wrong issuer"},
		{"no issuer", craftToken(t, hs256(), claims(func(c map[string]any) { delete(c, "iss") }), secret, sha256New), "wrong issuer"},
		{"wrong audience", wrongAudienceToken, "wrong audience"},
		{"no audience", craftToken(t, hs256(), claims(func(c map[string]any) { delete(c, "aud") }), secret, sha256New), "wrong audience"},
		{"not yet valid (nbf)", craftToken(t, hs256(), claims(func(c map[string]any) { c["nbf"] = now + 60 }), secret, sha256New), "token not yet valid"},
		{"expired (crafted)", craftToken(t, hs256(), claims(func(c map[string]any) { c["iat"], c["exp"] = now-200, now-100 }), secret, sha256New), "token expired"},
		{"no exp", craftToken(t, hs256(), claims(func(c map[string]any) { delete(c, "exp") }), secret, sha256New), "token has no expiry"},
		{"no sub", craftToken(t, hs256(), claims(func(c map[string]any) { delete(c, "sub") }), secret, sha256New), "token has no subject"},
	}
	verifier := newVerifier(t, security.VerifierConfig{Secret: secret, Issuer: testIssuer, Audience: testAudience, Now: clock.Now})
	if _, err := verifier.Verify(craftToken(t, hs256(), claims(nil), secret, sha256New)); err != nil {
		t.Fatalf("the crafted baseline token is refused, so the cases below prove nothing: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifier.Verify(tc.token)
			checkVerifyError(t, err, tc.want, tc.token, secret)
		})
	}
}

// checkVerifyError checks that err is nil when want is empty, and otherwise
// that it wraps domain.ErrUnauthenticated, names the reason want, and
// contains neither the token (nor any long part of it) nor the secret.
func checkVerifyError(t *testing.T, err error, want, token string, secret []byte) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("Verify() = %v, want success", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Verify() succeeded, want %q", want)
	}
	if !errors.Is(err, domain.ErrUnauthenticated) {
		t.Errorf("Verify() error %v does not wrap domain.ErrUnauthenticated", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Verify() error = %q, want it to contain %q", err, want)
	}
	checkNoLeak(t, err.Error(), token, secret)
}

// checkNoLeak fails when message contains the token, one of its segments
// (of eight characters or more) or the secret in any common encoding.
func checkNoLeak(t *testing.T, message, token string, secret []byte) {
	t.Helper()
	needles := []string{
		string(secret),
		base64.StdEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret),
	}
	if token != "" {
		needles = append(needles, token)
	}
	for segment := range strings.SplitSeq(token, ".") {
		if len(segment) >= 8 {
			needles = append(needles, segment)
		}
	}
	for _, needle := range needles {
		if strings.Contains(message, needle) {
			t.Fatalf("error %q leaks the token or the secret", message)
		}
	}
}

func TestBearerToken(t *testing.T) {
	cases := []struct {
		header string
		want   string // token, or the error reason after "!"
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi"},
		{"bearer abc.def.ghi", "abc.def.ghi"},
		{"BEARER abc.def.ghi", "abc.def.ghi"},
		{"  Bearer   abc.def.ghi  ", "abc.def.ghi"},
		{"", "!missing authorization"},
		{"   ", "!missing authorization"},
		{"Bearer", "!empty Bearer token"},
		{"Bearer   ", "!empty Bearer token"},
		{"Basic dXNlcjpwYXNzd29yZA==", "!not a Bearer token"},
		{"abc.def.ghi", "!not a Bearer token"},
		{"Bearer abc def", "!malformed Bearer token"},
	}
	for _, tc := range cases {
		got, err := security.BearerToken(tc.header)
		if reason, wantErr := strings.CutPrefix(tc.want, "!"); wantErr {
			if err == nil || !errors.Is(err, domain.ErrUnauthenticated) || !strings.Contains(err.Error(), reason) {
				t.Errorf("BearerToken(%q) = %q, %v; want an unauthenticated error containing %q", tc.header, got, err, reason)
				continue
			}
			if trimmed := strings.TrimSpace(tc.header); len(trimmed) >= 8 && strings.Contains(err.Error(), trimmed) {
				t.Errorf("BearerToken(%q) error %q repeats the header", tc.header, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", tc.header, got, err, tc.want)
		}
	}
}
