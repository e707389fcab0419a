package security_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when the test says so.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// newFakeClock returns a clock standing at a whole second, so that token
// times (which have a one-second resolution) are exact.
func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// encodeSegment returns the base64url encoding of v marshalled as JSON.
func encodeSegment(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal segment: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// craftToken builds a compact JWS by hand: header and claims as given,
// signed with an HMAC of newHash under secret, or left with an empty
// signature when newHash is nil.
func craftToken(t *testing.T, header, claims map[string]any, secret []byte, newHash func() hash.Hash) string {
	t.Helper()
	signingInput := encodeSegment(t, header) + "." + encodeSegment(t, claims)
	if newHash == nil {
		return signingInput + "."
	}
	return signingInput + "." + hmacSignature(signingInput, secret, newHash)
}

func hmacSignature(signingInput string, secret []byte, newHash func() hash.Hash) string {
	mac := hmac.New(newHash, secret)
	mac.Write([]byte(signingInput))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// hs256 is the header of the tokens the Minter makes.
func hs256() map[string]any { return map[string]any{"alg": "HS256", "typ": "JWT"} }

// sha256New is sha256.New with the type craftToken wants.
func sha256New() hash.Hash { return sha256.New() }

// decodeClaims returns the claims of a compact JWS without verifying it.
func decodeClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	return decodeSegment(t, token, 1)
}

// decodeHeader returns the protected header of a compact JWS.
func decodeHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	return decodeSegment(t, token, 0)
}

func decodeSegment(t *testing.T, token string, index int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[index])
	if err != nil {
		t.Fatalf("decode segment %d: %v", index, err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("unmarshal segment %d: %v", index, err)
	}
	return out
}
