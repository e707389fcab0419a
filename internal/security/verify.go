package security

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/gamelan-go/executor/internal/domain"
)

// DefaultLeeway is the clock skew a Verifier tolerates when its
// configuration sets none.
const DefaultLeeway = 5 * time.Second

// maxTokenBytes bounds the tokens a Verifier looks at. Tokens the Minter
// makes are a few hundred bytes; anything this long is refused as malformed
// before any decoding work is spent on it.
const maxTokenBytes = 8 << 10

// VerifierConfig configures a Verifier. Secret and Issuer are required.
type VerifierConfig struct {
	// Secret is the HMAC key shared with the engine, at least MinSecretBytes
	// long. The Verifier keeps its own copy.
	Secret []byte
	// Issuer is the iss claim every accepted token must carry.
	Issuer string
	// Audience, when set, must be one of the token's aud values. When empty
	// the audience is not checked.
	Audience string
	// Leeway is the clock skew tolerated on exp, nbf and iat; DefaultLeeway
	// when zero. It must not be negative.
	Leeway time.Duration
	// Now is the clock, time.Now when nil. Tests inject a fake clock.
	Now func() time.Time
}

// Validate reports every field that is missing or out of range, in one
// error of one line. It never includes the secret, only its length.
func (c VerifierConfig) Validate() error {
	var problems []string
	if len(c.Secret) < MinSecretBytes {
		problems = append(problems, fmt.Sprintf("secret must be at least %d bytes, got %d", MinSecretBytes, len(c.Secret)))
	}
	if c.Issuer == "" {
		problems = append(problems, "expected issuer is required")
	}
	if c.Leeway < 0 {
		problems = append(problems, fmt.Sprintf("leeway must not be negative, got %s", c.Leeway))
	}
	if len(problems) > 0 {
		return fmt.Errorf("token verifier configuration: %s", strings.Join(problems, "; "))
	}
	return nil
}

// Claims are the verified claims of a token that callers act on.
type Claims struct {
	// Subject is the sub claim: the id of the executor the token speaks for.
	Subject string
	// Issuer is the iss claim, equal to VerifierConfig.Issuer.
	Issuer string
	// ExecutorTypes is the executor_types claim, nil when the token has none.
	ExecutorTypes []string
	// ExpiresAt is the exp claim.
	ExpiresAt time.Time
}

// Verifier checks HS256 tokens against a shared secret, an issuer and
// optionally an audience. It is safe for concurrent use.
type Verifier struct {
	secret   []byte
	issuer   string
	audience string
	leeway   time.Duration
	now      func() time.Time
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		secret:   slices.Clone(cfg.Secret),
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		leeway:   leeway,
		now:      now,
	}, nil
}

// Verify checks token and returns its claims. It accepts only a compact JWS
// whose header names alg HS256, whose signature matches the secret, whose
// iss is the configured issuer, whose aud contains the configured audience
// (when one is configured), which has a sub and an exp, and which is within
// its validity window (iat and nbf not in the future, exp not past, each
// with the configured leeway).
//
// Every error wraps domain.ErrUnauthenticated and carries a short reason
// such as "token expired" or "bad signature". Errors never contain the token,
// any part of it, or the secret, so they may be logged and returned to the
// caller.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, unauthenticated("missing token")
	}
	if len(token) > maxTokenBytes {
		return Claims{}, unauthenticated("malformed token")
	}
	if err := checkAlgorithm(token); err != nil {
		return Claims{}, err
	}
	parsed, err := jwt.ParseString(token,
		jwt.WithKey(jwa.HS256, v.secret),
		jwt.WithValidate(false),
		jwt.WithTypedClaim(claimExecutorTypes, []string{}),
	)
	if err != nil {
		if jws.IsVerificationError(err) {
			return Claims{}, unauthenticated("bad signature")
		}
		return Claims{}, unauthenticated("malformed token")
	}
	options := []jwt.ValidateOption{
		jwt.WithClock(jwt.ClockFunc(v.now)),
		jwt.WithAcceptableSkew(v.leeway),
		jwt.WithIssuer(v.issuer),
	}
	if v.audience != "" {
		options = append(options, jwt.WithAudience(v.audience))
	}
	if err := jwt.Validate(parsed, options...); err != nil {
		return Claims{}, unauthenticated(validationReason(err))
	}
	if parsed.Expiration().IsZero() || parsed.Expiration().Unix() == 0 {
		return Claims{}, unauthenticated("token has no expiry")
	}
	if parsed.Subject() == "" {
		return Claims{}, unauthenticated("token has no subject")
	}
	claims := Claims{
		Subject:   parsed.Subject(),
		Issuer:    parsed.Issuer(),
		ExpiresAt: parsed.Expiration(),
	}
	if raw, ok := parsed.Get(claimExecutorTypes); ok {
		types, ok := raw.([]string)
		if !ok {
			return Claims{}, unauthenticated("malformed token")
		}
		claims.ExecutorTypes = slices.Clone(types)
	}
	return claims, nil
}

// checkAlgorithm reads the protected header of a compact JWS and refuses
// every alg but HS256 before any signature is checked, so that neither an
// unsigned token nor a token signed with another algorithm (with or without
// the same key) is ever considered. A header with "b64" or "crit" is
// refused too: those change what is signed, and no JWT uses them.
func checkAlgorithm(token string) error {
	encodedHeader, _, ok := strings.Cut(token, ".")
	if !ok || strings.Count(token, ".") != 2 {
		return unauthenticated("malformed token")
	}
	rawHeader, err := base64.RawURLEncoding.DecodeString(encodedHeader)
	if err != nil {
		return unauthenticated("malformed token")
	}
	var header struct {
		Algorithm *string `json:"alg"`
		// A JWT's payload is base64url JSON (RFC 7519, section 7.2): an
		// unencoded payload (RFC 7797, "b64": false, which the library
		// would honour), or any other critical extension, is not one.
		Unencoded json.RawMessage `json:"b64"`
		Critical  json.RawMessage `json:"crit"`
	}
	if err := json.Unmarshal(rawHeader, &header); err != nil || header.Algorithm == nil || header.Unencoded != nil || header.Critical != nil {
		return unauthenticated("malformed token")
	}
	switch alg := *header.Algorithm; {
	case alg == jwa.HS256.String():
		return nil
	case strings.EqualFold(alg, jwa.NoSignature.String()):
		return unauthenticated("alg none not accepted")
	default:
		return unauthenticated("algorithm not accepted, only HS256 is")
	}
}

// validationReason names the claim check that err reports.
func validationReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return "token not yet valid"
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return "wrong audience"
	default:
		return "invalid claims"
	}
}

// unauthenticated returns an error wrapping domain.ErrUnauthenticated with a
// fixed reason. Reasons are constants chosen here, never text from the token.
func unauthenticated(reason string) error {
	return fmt.Errorf("%w: %s", domain.ErrUnauthenticated, reason)
}

// SingleBearerToken extracts the token from every Authorization header (or
// authorization metadata value) of one request, as BearerToken does, and
// refuses a request that carries none or more than one. Two credentials in
// one request are ambiguous: a proxy in front of the service may have checked
// one while the service would act on the other, so neither is taken, even
// when both are valid. Errors wrap domain.ErrUnauthenticated and never
// contain the values.
func SingleBearerToken(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", unauthenticated("missing authorization")
	case 1:
		return BearerToken(values[0])
	default:
		return "", unauthenticated("more than one authorization value")
	}
}

// BearerToken extracts the token from an Authorization header or
// authorization metadata value of the form "Bearer <token>". The scheme is
// matched case-insensitively and surrounding spaces are ignored. Errors wrap
// domain.ErrUnauthenticated and never contain the value.
func BearerToken(authorization string) (string, error) {
	trimmed := strings.TrimSpace(authorization)
	if trimmed == "" {
		return "", unauthenticated("missing authorization")
	}
	scheme, rest, _ := strings.Cut(trimmed, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", unauthenticated("authorization is not a Bearer token")
	}
	token := strings.TrimSpace(rest)
	if token == "" {
		return "", unauthenticated("empty Bearer token")
	}
	if strings.ContainsAny(token, " \t") {
		return "", unauthenticated("malformed Bearer token")
	}
	return token, nil
}
