package security_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// The fuzz targets of token verification (verify.go). The verifier under
// test has a fixed secret and a fixed clock, so that the tokens of the seed
// corpora (testdata/fuzz/FuzzVerify) stay valid for ever.

var (
	fuzzSecret = []byte("fuzz-secret-of-at-least-32-bytes-0123456789")
	// fuzzNow is the verifier's clock: the fake clock's start.
	fuzzNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

const (
	fuzzIssuer   = "gamelan-engine"
	fuzzAudience = "gamelan-executor"
)

// verifyReasons are the only reasons Verify may give: fixed words, never
// text from the token.
var verifyReasons = []string{
	"missing token", "malformed token", "bad signature", "alg none not accepted",
	"algorithm not accepted, only HS256 is", "token expired", "token not yet valid", "wrong issuer",
	"wrong audience", "invalid claims", "token has no expiry", "token has no subject",
}

func fuzzVerifier(tb testing.TB) *security.Verifier {
	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: fuzzSecret, Issuer: fuzzIssuer,
		Audience: fuzzAudience, Now: func() time.Time { return fuzzNow }})
	if err != nil {
		tb.Fatal(err)
	}
	return verifier
}

// FuzzVerify gives Verify arbitrary strings as the bearer token; the seed
// corpus holds valid tokens (which the fuzzer mutates) and hostile ones.
// A token is accepted only if, checked independently of the JWT library,
//   - its header and payload are exactly the bytes of a header and payload
//     signed with the secret (the HMAC-SHA256 of their encoding is the
//     signature), so a mutation that still verifies changed only how the
//     same bytes are written;
//   - its header says alg HS256;
//   - its claims hold: iss is the issuer, aud names the audience, sub is
//     not empty, exp is present and not past, nbf and iat not in the
//     future (5 s of leeway);
//   - and the claims Verify returns are the payload's.
//
// A refused token gets one of the fixed reasons, wrapping
// domain.ErrUnauthenticated, never any part of the token.
func FuzzVerify(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	verifier := fuzzVerifier(f)
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := verifier.Verify(token)
		if err != nil {
			checkRefusal(t, token, err)
			return
		}
		checkAccepted(t, token, claims)
	})
}

// FuzzVerifyMutation mutates valid tokens: which picks one, each (at, xor)
// pair flips bits of one byte, cut drops the token's tail (0: none) and
// insert puts a byte at a position. A mutated token that still verifies
// must mean the same: the header and payload bytes and the claims of the
// original. The original itself always verifies.
func FuzzVerifyMutation(f *testing.F) {
	f.Add(uint8(0), uint16(10), byte(1), uint16(0), byte(0), uint16(0), uint16(0), byte(0))
	verifier := fuzzVerifier(f)
	f.Fuzz(func(t *testing.T, which uint8, at1 uint16, xor1 byte, at2 uint16, xor2 byte, cut uint16, insertAt uint16, insert byte) {
		tokens := validTokens(t)
		original := tokens[int(which)%len(tokens)]
		want, err := verifier.Verify(original)
		if err != nil {
			t.Fatalf("a valid token is refused: %v", err)
		}
		b := []byte(original)
		b[int(at1)%len(b)] ^= xor1
		b[int(at2)%len(b)] ^= xor2
		if cut > 0 {
			b = b[:len(b)-int(cut)%len(b)]
		}
		if insert != 0 {
			i := int(insertAt) % (len(b) + 1)
			b = slices.Insert(b, i, insert)
		}
		mutated := string(b)
		got, err := verifier.Verify(mutated)
		if err != nil {
			checkRefusal(t, mutated, err)
			return
		}
		checkAccepted(t, mutated, got)
		if !sameClaims(want, got) {
			t.Fatalf("a mutated token verifies with other claims:\noriginal %q: %+v\nmutated  %q: %+v", original, want, mutated, got)
		}
		wh, wp, _ := decodedParts(original)
		gh, gp, _ := decodedParts(mutated)
		if !bytes.Equal(wh, gh) || !bytes.Equal(wp, gp) {
			t.Fatalf("a mutated token verifies with other content:\noriginal %q\nmutated  %q", original, mutated)
		}
	})
}

// FuzzBearerToken gives BearerToken arbitrary Authorization values. A token
// it returns is the non-empty, space-free text after a "Bearer" scheme (any
// case), given back unchanged when wrapped again; a refusal wraps
// domain.ErrUnauthenticated and never echoes the value.
func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer abc.def.ghi")
	f.Fuzz(func(t *testing.T, authorization string) {
		token, err := security.BearerToken(authorization)
		if err != nil {
			if !errors.Is(err, domain.ErrUnauthenticated) {
				t.Fatalf("error does not wrap ErrUnauthenticated: %v", err)
			}
			if v := strings.TrimSpace(authorization); len(v) >= 8 && strings.Contains(err.Error(), v) {
				t.Fatalf("error %q echoes the value", err)
			}
			return
		}
		if token == "" || strings.ContainsAny(token, " \t") {
			t.Fatalf("token %q is empty or holds spaces", token)
		}
		scheme, _, _ := strings.Cut(strings.TrimSpace(authorization), " ")
		if !strings.EqualFold(scheme, "Bearer") || !strings.Contains(authorization, token) {
			t.Fatalf("token %q from %q, which is not Bearer <token>", token, authorization)
		}
		again, err := security.BearerToken("Bearer " + token)
		if err != nil || again != token {
			t.Fatalf("Bearer %q gave %q, %v", token, again, err)
		}
	})
}

// checkRefusal checks the error of a refused token.
func checkRefusal(t *testing.T, token string, err error) {
	t.Helper()
	if !errors.Is(err, domain.ErrUnauthenticated) {
		t.Fatalf("error does not wrap ErrUnauthenticated: %v", err)
	}
	reason, ok := strings.CutPrefix(err.Error(), domain.ErrUnauthenticated.Error()+": ")
	if !ok || !slices.Contains(verifyReasons, reason) {
		t.Fatalf("error %q is not one of the fixed reasons", err)
	}
}

// checkAccepted checks an accepted token independently of the JWT library.
func checkAccepted(t *testing.T, token string, claims security.Claims) {
	t.Helper()
	header, payload, signature := decodedParts(token)
	if header == nil || payload == nil || signature == nil {
		t.Fatalf("accepted a token that is not three base64url parts: %q", token)
	}
	mac := hmac.New(sha256.New, fuzzSecret)
	mac.Write([]byte(base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)))
	if !hmac.Equal(mac.Sum(nil), signature) {
		t.Fatalf("accepted a token whose content was never signed with the secret: %q", token)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(header, &h); err != nil || h.Alg != "HS256" {
		t.Fatalf("accepted a token whose header is %q", header)
	}
	var c struct {
		Iss           string          `json:"iss"`
		Sub           string          `json:"sub"`
		Aud           json.RawMessage `json:"aud"`
		Exp           numericDate     `json:"exp"`
		Nbf           numericDate     `json:"nbf"`
		Iat           numericDate     `json:"iat"`
		ExecutorTypes []string        `json:"executor_types"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatalf("accepted a token whose payload is not the claims object: %v", err)
	}
	leeway := security.DefaultLeeway.Seconds()
	now := float64(fuzzNow.Unix())
	switch {
	case c.Iss != fuzzIssuer:
		t.Fatalf("accepted iss %q", c.Iss)
	case !audienceNames(c.Aud, fuzzAudience):
		t.Fatalf("accepted aud %s", c.Aud)
	case c.Sub == "":
		t.Fatalf("accepted a token without sub")
	case !c.Exp.set || c.Exp.at+leeway < now:
		t.Fatalf("accepted a token without exp, or expired")
	case c.Nbf.set && c.Nbf.at-leeway > now, c.Iat.set && c.Iat.at-leeway > now:
		t.Fatalf("accepted a token not yet valid")
	}
	if claims.Subject != c.Sub || claims.Issuer != c.Iss || claims.ExpiresAt.Unix() != int64(math.Floor(c.Exp.at)) ||
		!slices.Equal(claims.ExecutorTypes, c.ExecutorTypes) {
		t.Fatalf("Verify's claims %+v are not the payload's %s", claims, payload)
	}
}

// numericDate is a time claim as the JWT library reads it: a JSON number
// of seconds, or (more leniently than RFC 7519) a string holding one.
type numericDate struct {
	set bool
	at  float64
}

func (d *numericDate) UnmarshalJSON(raw []byte) error {
	if string(raw) == "null" {
		return nil
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		raw = []byte(text)
	}
	if err := json.Unmarshal(raw, &d.at); err != nil {
		return err
	}
	d.set = true
	return nil
}

// decodedParts decodes the three parts of a compact JWS as base64url, or
// else standard base64 (padding and line breaks tolerated, as decoders
// do, and white space around the token, which the JWT library trims):
// what the bytes are, however they are written. A part that does not
// decode is nil.
func decodedParts(token string) (header, payload, signature []byte) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		return nil, nil, nil
	}
	decode := func(s string) []byte {
		s = strings.TrimRight(s, "=")
		if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
			return b
		}
		if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
			return b
		}
		return nil
	}
	return decode(parts[0]), decode(parts[1]), decode(parts[2])
}

// audienceNames reports whether aud, a string or an array of strings,
// names audience.
func audienceNames(aud json.RawMessage, audience string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == audience
	}
	var many []string
	return json.Unmarshal(aud, &many) == nil && slices.Contains(many, audience)
}

func sameClaims(a, b security.Claims) bool {
	return a.Subject == b.Subject && a.Issuer == b.Issuer && a.ExpiresAt.Equal(b.ExpiresAt) && slices.Equal(a.ExecutorTypes, b.ExecutorTypes)
}

// validTokens are tokens the fuzz verifier accepts, built byte for byte
// (claims as the Minter writes them, an audience as a plain string, nbf
// at the edge of the leeway), so that a mutation is reproducible.
func validTokens(t *testing.T) []string {
	now := fuzzNow.Unix()
	header := map[string]any{"alg": "HS256", "typ": "JWT"}
	return []string{
		craftToken(t, header, map[string]any{"iss": fuzzIssuer, "sub": "engine", "aud": []string{fuzzAudience},
			"iat": now, "exp": now + 300, "jti": "jti-1", "executor_name": "engine", "executor_version": "1",
			"executor_types": []string{"calculate-tax", "order-validator"}}, fuzzSecret, sha256.New),
		craftToken(t, map[string]any{"alg": "HS256"}, map[string]any{"iss": fuzzIssuer, "sub": "e", "aud": fuzzAudience,
			"exp": now + 1}, fuzzSecret, sha256.New),
		craftToken(t, header, map[string]any{"iss": fuzzIssuer, "sub": "executor-7", "aud": []string{"other", fuzzAudience},
			"nbf": now + 4, "iat": now - 10, "exp": now + 60}, fuzzSecret, sha256.New),
	}
}
