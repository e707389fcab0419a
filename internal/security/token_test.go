package security_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/internal/security/securitytest"
)

const (
	testIssuer   = "executor-service"
	testAudience = "gamelan-engine"
	testSubject  = "executor-default"
	testTTL      = 90 * time.Second
)

func minterConfig(t *testing.T, secret []byte, clock *fakeClock) security.MinterConfig {
	t.Helper()
	return security.MinterConfig{
		Secret:        secret,
		Issuer:        testIssuer,
		Audience:      testAudience,
		TTL:           testTTL,
		Subject:       testSubject,
		Name:          "order-service",
		Version:       "1.4.2",
		ExecutorTypes: []string{"validate-order", "calculate-tax"},
		Now:           clock.Now,
	}
}

func newMinter(t *testing.T, cfg security.MinterConfig) *security.Minter {
	t.Helper()
	minter, err := security.NewMinter(cfg)
	if err != nil {
		t.Fatalf("NewMinter: %v", err)
	}
	return minter
}

func TestMinterConfigValidate(t *testing.T) {
	secret := securitytest.Secret(t)
	valid := minterConfig(t, secret, newFakeClock())
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*security.MinterConfig)
		want   string
	}{
		{"short secret", func(c *security.MinterConfig) { c.Secret = secret[:31] }, "secret must be at least 32 bytes, got 31"},
		{"no secret", func(c *security.MinterConfig) { c.Secret = nil }, "secret must be at least 32 bytes, got 0"},
		{"no issuer", func(c *security.MinterConfig) { c.Issuer = "" }, "issuer is required"},
		{"no audience", func(c *security.MinterConfig) { c.Audience = "" }, "audience is required"},
		{"no subject", func(c *security.MinterConfig) { c.Subject = "" }, "default subject is required"},
		{"short TTL", func(c *security.MinterConfig) { c.TTL = 29 * time.Second }, "token TTL must be at least 30s, got 29s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
			if _, err := security.NewMinter(cfg); err == nil {
				t.Fatal("NewMinter accepted an invalid config")
			}
		})
	}
	t.Run("minimum TTL", func(t *testing.T) {
		cfg := valid
		cfg.TTL = security.MinTTL
		if err := cfg.Validate(); err != nil {
			t.Fatalf("TTL of exactly %s refused: %v", security.MinTTL, err)
		}
	})
}

func TestTokenClaims(t *testing.T) {
	clock := newFakeClock()
	minter := newMinter(t, minterConfig(t, securitytest.Secret(t), clock))

	token, err := minter.Token("executor-7")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if alg := decodeHeader(t, token)["alg"]; alg != "HS256" {
		t.Errorf("header alg = %v, want HS256", alg)
	}
	claims := decodeClaims(t, token)
	wantKeys := []string{"aud", "executor_name", "executor_types", "executor_version", "exp", "iat", "iss", "jti", "sub"}
	gotKeys := make([]string, 0, len(claims))
	for key := range claims {
		gotKeys = append(gotKeys, key)
	}
	slices.Sort(gotKeys)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Errorf("claims = %v, want exactly %v", gotKeys, wantKeys)
	}
	checks := map[string]any{
		"iss":              testIssuer,
		"sub":              "executor-7",
		"iat":              float64(clock.Now().Unix()),
		"exp":              float64(clock.Now().Add(testTTL).Unix()),
		"executor_name":    "order-service",
		"executor_version": "1.4.2",
	}
	for claim, want := range checks {
		if got := claims[claim]; got != want {
			t.Errorf("claim %s = %v (%T), want %v", claim, got, got, want)
		}
	}
	if aud, ok := claims["aud"].([]any); !ok || len(aud) != 1 || aud[0] != testAudience {
		t.Errorf("claim aud = %v, want [%s]", claims["aud"], testAudience)
	}
	if types, ok := claims["executor_types"].([]any); !ok || len(types) != 2 || types[0] != "validate-order" || types[1] != "calculate-tax" {
		t.Errorf("claim executor_types = %v, want [validate-order calculate-tax]", claims["executor_types"])
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		t.Error("claim jti is empty")
	}
}

func TestTokenDefaultsAndEmptyExecutorTypes(t *testing.T) {
	cfg := minterConfig(t, securitytest.Secret(t), newFakeClock())
	cfg.ExecutorTypes = nil
	minter := newMinter(t, cfg)
	token, err := minter.Token("")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	claims := decodeClaims(t, token)
	if claims["sub"] != testSubject {
		t.Errorf("sub = %v, want the default subject %s", claims["sub"], testSubject)
	}
	if types, ok := claims["executor_types"].([]any); !ok || len(types) != 0 {
		t.Errorf("executor_types = %#v, want an empty array", claims["executor_types"])
	}
	again, err := minter.Token(testSubject)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if again != token {
		t.Error("the empty subject and the default subject got different cached tokens")
	}
}

func TestTokenCachingAndRefresh(t *testing.T) {
	clock := newFakeClock()
	minter := newMinter(t, minterConfig(t, securitytest.Secret(t), clock))
	mustToken := func(subject string) string {
		t.Helper()
		token, err := minter.Token(subject)
		if err != nil {
			t.Fatalf("Token(%q): %v", subject, err)
		}
		return token
	}

	first := mustToken("a")
	// 90s TTL: the token is reused while at least 30s are left, that is up
	// to and including 60s after it was minted.
	clock.Advance(60 * time.Second)
	if got := mustToken("a"); got != first {
		t.Fatal("token with exactly a third of its TTL left was not reused")
	}
	if other := mustToken("b"); other == first {
		t.Fatal("another subject got the same token")
	}
	clock.Advance(time.Second)
	second := mustToken("a")
	if second == first {
		t.Fatal("token with less than a third of its TTL left was reused")
	}
	claims := decodeClaims(t, second)
	if want := float64(clock.Now().Add(testTTL).Unix()); claims["exp"] != want {
		t.Errorf("refreshed token exp = %v, want %v", claims["exp"], want)
	}
	if decodeClaims(t, first)["jti"] == claims["jti"] {
		t.Error("refreshed token reuses the jti of the first one")
	}
	if got := mustToken("a"); got != second {
		t.Error("refreshed token was not cached")
	}
}

func TestTokenJTIsAreUnique(t *testing.T) {
	clock := newFakeClock()
	minter := newMinter(t, minterConfig(t, securitytest.Secret(t), clock))
	seen := make(map[string]bool)
	for i := range 50 {
		token, err := minter.Token("subject-" + strings.Repeat("x", i))
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		jti, _ := decodeClaims(t, token)["jti"].(string)
		if jti == "" || seen[jti] {
			t.Fatalf("token %d has jti %q, empty or already seen", i, jti)
		}
		seen[jti] = true
	}
}

func TestTokenConcurrentCallersShareOneMint(t *testing.T) {
	clock := newFakeClock()
	minter := newMinter(t, minterConfig(t, securitytest.Secret(t), clock))
	const callers = 32
	tokens := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = minter.Token("shared")
		})
	}
	close(start)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("caller %d got a different token: concurrent callers minted more than once", i)
		}
	}
}

func TestTokenManySubjects(t *testing.T) {
	clock := newFakeClock()
	minter := newMinter(t, minterConfig(t, securitytest.Secret(t), clock))
	// Past the cache bound tokens are still minted, just not cached.
	for i := range 300 {
		subject := "executor-" + strings.Repeat("y", i)
		token, err := minter.Token(subject)
		if err != nil {
			t.Fatalf("Token(%d): %v", i, err)
		}
		if sub := decodeClaims(t, token)["sub"]; sub != subject {
			t.Fatalf("token %d has sub %v", i, sub)
		}
	}
}

func TestRefreshAfter(t *testing.T) {
	minter := newMinter(t, minterConfig(t, securitytest.Secret(t), newFakeClock()))
	if got, want := minter.RefreshAfter(), testTTL/3; got != want {
		t.Errorf("RefreshAfter() = %s, want %s (a third of %s)", got, want, testTTL)
	}
}

func TestMinterKeepsOwnCopies(t *testing.T) {
	clock := newFakeClock()
	secret := securitytest.Secret(t)
	cfg := minterConfig(t, slices.Clone(secret), clock)
	minter := newMinter(t, cfg)
	// Mutating the caller's slices must not change later tokens.
	clear(cfg.Secret)
	cfg.ExecutorTypes[0] = "changed"

	token, err := minter.Token("copy")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	verifier := newVerifier(t, security.VerifierConfig{Secret: secret, Issuer: testIssuer, Now: clock.Now})
	claims, err := verifier.Verify(token)
	if err != nil {
		t.Fatalf("token signed after the caller cleared its secret slice does not verify with the original secret: %v", err)
	}
	if claims.ExecutorTypes[0] != "validate-order" {
		t.Errorf("executor_types[0] = %q, want validate-order", claims.ExecutorTypes[0])
	}
}
