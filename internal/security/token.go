package security

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Names of the private claims every token carries beside the registered ones.
const (
	claimExecutorName    = "executor_name"
	claimExecutorVersion = "executor_version"
	claimExecutorTypes   = "executor_types"
)

// MinSecretBytes is the shortest shared secret accepted: HS256 wants a key at
// least as long as its 256-bit hash (RFC 7518, section 3.2).
const MinSecretBytes = 32

// MinTTL is the shortest token lifetime a Minter accepts. Shorter lifetimes
// leave too little room for clock skew between the executor and the engine.
const MinTTL = 30 * time.Second

// maxCachedSubjects bounds the token cache of a Minter. Subjects are the ids
// of the executors one service hosts, so the bound is never reached in
// practice; past it, tokens for new subjects are minted on every call.
const maxCachedSubjects = 256

// MinterConfig configures a Minter. Every field but Name, Version,
// ExecutorTypes and Now is required.
type MinterConfig struct {
	// Secret is the HMAC key shared with the engine, at least MinSecretBytes
	// long. The Minter keeps its own copy.
	Secret []byte
	// Issuer is put in the iss claim.
	Issuer string
	// Audience is put in the aud claim: the engine the tokens are meant for.
	Audience string
	// TTL is the lifetime of a token (exp - iat), at least MinTTL. The
	// protocol's default is five minutes.
	TTL time.Duration
	// Subject is the sub claim used when Token is asked for the empty subject
	// and when a call's context carries no subject (see WithSubject).
	Subject string
	// Name is put in the executor_name claim.
	Name string
	// Version is put in the executor_version claim.
	Version string
	// ExecutorTypes is put in the executor_types claim, an array that is
	// empty when ExecutorTypes is. The Minter keeps its own copy.
	ExecutorTypes []string
	// Now is the clock, time.Now when nil. Tests inject a fake clock.
	Now func() time.Time
}

// Validate reports every field that is missing or out of range, in one
// error of one line. It never includes the secret, only its length.
func (c MinterConfig) Validate() error {
	var problems []string
	if len(c.Secret) < MinSecretBytes {
		problems = append(problems, fmt.Sprintf("secret must be at least %d bytes, got %d", MinSecretBytes, len(c.Secret)))
	}
	if c.Issuer == "" {
		problems = append(problems, "issuer is required")
	}
	if c.Audience == "" {
		problems = append(problems, "audience is required")
	}
	if c.Subject == "" {
		problems = append(problems, "default subject is required")
	}
	if c.TTL < MinTTL {
		problems = append(problems, fmt.Sprintf("token TTL must be at least %s, got %s", MinTTL, c.TTL))
	}
	if len(problems) > 0 {
		return fmt.Errorf("token minter configuration: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Minter mints and caches the HS256 tokens an executor sends to the engine.
// All its methods are safe for concurrent use.
type Minter struct {
	cfg MinterConfig
	now func() time.Time

	mu sync.Mutex
	// cache holds one entry per subject, created on first use; an entry's
	// own lock serialises minting for that subject.
	cache map[string]*cachedToken
}

// cachedToken is the current token of one subject.
type cachedToken struct {
	mu        sync.Mutex
	token     string
	expiresAt time.Time
}

// NewMinter validates cfg and returns a Minter with an empty cache.
func NewMinter(cfg MinterConfig) (*Minter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Secret = slices.Clone(cfg.Secret)
	cfg.ExecutorTypes = slices.Clone(cfg.ExecutorTypes)
	if cfg.ExecutorTypes == nil {
		cfg.ExecutorTypes = []string{}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Minter{cfg: cfg, now: now, cache: make(map[string]*cachedToken)}, nil
}

// Token returns a signed token for subject, or for the configured default
// subject when subject is empty. It returns the cached token of that subject
// while at least a third of its TTL is left, and otherwise mints, caches and
// returns a fresh one, so a returned token is always valid for at least
// TTL/3. When several goroutines ask for the same subject at once, one of
// them mints and the others wait for and share its token.
func (m *Minter) Token(subject string) (string, error) {
	if subject == "" {
		subject = m.cfg.Subject
	}
	entry := m.entry(subject)
	if entry == nil {
		token, _, err := m.mint(subject)
		return token, err
	}
	entry.mu.Lock()
	defer entry.mu.Unlock()
	if entry.token != "" && entry.expiresAt.Sub(m.now()) >= m.cfg.TTL/3 {
		return entry.token, nil
	}
	token, expiresAt, err := m.mint(subject)
	if err != nil {
		return "", err
	}
	entry.token, entry.expiresAt = token, expiresAt
	return token, nil
}

// RefreshAfter returns how long a long-lived stream opened now may stay open
// before it should be closed and reopened with a fresh token: a third of the
// TTL. Token never hands out a token with less than TTL/3 left, so a stream
// that lives no longer than that never outlives the token it presented.
func (m *Minter) RefreshAfter() time.Duration {
	return m.cfg.TTL / 3
}

// entry returns the cache entry of subject, creating it when needed, or nil
// when the cache is full of other subjects.
func (m *Minter) entry(subject string) *cachedToken {
	m.mu.Lock()
	defer m.mu.Unlock()
	if entry, ok := m.cache[subject]; ok {
		return entry
	}
	if len(m.cache) >= maxCachedSubjects {
		return nil
	}
	entry := &cachedToken{}
	m.cache[subject] = entry
	return entry
}

// mint signs a new token for subject and returns it with its expiry. The
// registered times have a resolution of one second, so iat is now rounded
// down to the second and exp is iat + TTL rounded down to the second.
func (m *Minter) mint(subject string) (string, time.Time, error) {
	issuedAt := m.now().Truncate(time.Second)
	expiresAt := issuedAt.Add(m.cfg.TTL).Truncate(time.Second)
	token, err := jwt.NewBuilder().
		Issuer(m.cfg.Issuer).
		Subject(subject).
		Audience([]string{m.cfg.Audience}).
		IssuedAt(issuedAt).
		Expiration(expiresAt).
		JwtID(rand.Text()).
		Claim(claimExecutorName, m.cfg.Name).
		Claim(claimExecutorVersion, m.cfg.Version).
		Claim(claimExecutorTypes, m.cfg.ExecutorTypes).
		Build()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("build token for subject %q: %w", subject, err)
	}
	signed, err := jwt.Sign(token, jwt.WithKey(jwa.HS256, m.cfg.Secret))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token for subject %q: %w", subject, err)
	}
	return string(signed), expiresAt, nil
}
