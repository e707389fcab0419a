package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The types of this file parse themselves: caarlos0/env calls their
// UnmarshalText with the variable's text (never for an empty variable
// without default, which leaves the zero value), and the error they return
// is the rule Load reports after the variable's name and value. MarshalText
// gives back the form the variable is written in, for String and LogValue.

// Bounds sets the inclusive range of an Int or a Seconds. Each range is an
// empty struct type, so that the field's type says its range.
type Bounds interface {
	limits() (low, high int)
}

// The ranges in use. An unbounded side is what a 32-bit int holds.
type (
	// AtLeast0 is 0 and more.
	AtLeast0 struct{}
	// AtLeast1 is 1 and more.
	AtLeast1 struct{}
	// PortRange is 0 to 65535; 0 asks the system for a free port.
	PortRange struct{}
	// UpToAYear is 1 second to 365 days.
	UpToAYear struct{}
	// ZeroToAYear is UpToAYear with 0, which turns the feature off.
	ZeroToAYear struct{}
	// KeepAliveRange is 10 seconds (grpc-go's floor) to 365 days.
	KeepAliveRange struct{}
	// TokenLifetime is 30 seconds to a day.
	TokenLifetime struct{}
	// RequestTimeout is 1 to 300 seconds.
	RequestTimeout struct{}
	// AtLeast1KiB is 1024 bytes and more.
	AtLeast1KiB struct{}
	// AtLeast64KiB is 65536 bytes and more.
	AtLeast64KiB struct{}
	// HTTP2Window is 65535 bytes, HTTP/2's initial window, and more.
	HTTP2Window struct{}
)

const year = 365 * 24 * 60 * 60

func (AtLeast0) limits() (int, int)       { return 0, math.MaxInt32 }
func (AtLeast1) limits() (int, int)       { return 1, math.MaxInt32 }
func (PortRange) limits() (int, int)      { return 0, 65535 }
func (UpToAYear) limits() (int, int)      { return 1, year }
func (ZeroToAYear) limits() (int, int)    { return 0, year }
func (KeepAliveRange) limits() (int, int) { return 10, year }
func (TokenLifetime) limits() (int, int)  { return 30, 24 * 60 * 60 }
func (RequestTimeout) limits() (int, int) { return 1, 300 }
func (AtLeast1KiB) limits() (int, int)    { return 1024, math.MaxInt32 }
func (AtLeast64KiB) limits() (int, int)   { return 65536, math.MaxInt32 }
func (HTTP2Window) limits() (int, int)    { return 65535, math.MaxInt32 }

// parseBounded reads a whole number within B's range.
func parseBounded[B Bounds](text []byte) (int, error) {
	low, high := (*new(B)).limits()
	n, err := strconv.ParseInt(string(text), 10, 64)
	if err != nil || n < int64(low) || n > int64(high) {
		rule := "must be a whole number of at least " + strconv.Itoa(low)
		if high != math.MaxInt32 {
			rule += " and at most " + strconv.Itoa(high)
		}
		return 0, errors.New(rule)
	}
	return int(n), nil
}

// Int is a whole number within the range B.
type Int[B Bounds] int

// UnmarshalText parses a whole number and checks its range.
func (n *Int[B]) UnmarshalText(text []byte) error {
	v, err := parseBounded[B](text)
	*n = Int[B](v)
	return err
}

// MarshalText writes the number.
func (n Int[B]) MarshalText() ([]byte, error) { return strconv.AppendInt(nil, int64(n), 10), nil }

// Seconds is a duration written as a whole number of seconds within the
// range B, as the variables ending in _SECONDS are.
type Seconds[B Bounds] time.Duration

// UnmarshalText parses a whole number of seconds and checks its range.
func (s *Seconds[B]) UnmarshalText(text []byte) error {
	v, err := parseBounded[B](text)
	*s = Seconds[B](time.Duration(v) * time.Second)
	return err
}

// MarshalText writes the whole number of seconds.
func (s Seconds[B]) MarshalText() ([]byte, error) {
	return strconv.AppendInt(nil, int64(time.Duration(s)/time.Second), 10), nil
}

// Duration is s as a time.Duration.
func (s Seconds[B]) Duration() time.Duration { return time.Duration(s) }

// Delay is a Go duration of at least 0, such as 2s or 1m30s.
type Delay time.Duration

// UnmarshalText parses a Go duration.
func (d *Delay) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil || v < 0 {
		return errors.New("must be a Go duration of at least 0, such as 2s, 500ms or 1m30s")
	}
	*d = Delay(v)
	return nil
}

// MarshalText writes the duration as Go does.
func (d Delay) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Duration is d as a time.Duration.
func (d Delay) Duration() time.Duration { return time.Duration(d) }

// Text is UTF-8 text that is not blank. (Text goes to the engine in
// protobuf strings, such as the version at registration: bytes that are
// not UTF-8 would make every registration fail to encode.)
type Text string

// UnmarshalText refuses a value of white space only, or not UTF-8.
func (t *Text) UnmarshalText(text []byte) error {
	if strings.TrimSpace(string(text)) == "" {
		return errors.New("must not be blank")
	}
	if !utf8.Valid(text) {
		return errors.New(utf8Rule)
	}
	*t = Text(text)
	return nil
}

// Identifier is a name fit to start executor ids: 1-64 characters of a-z,
// A-Z, 0-9, _ and -.
type Identifier string

// UnmarshalText checks the characters and the length.
func (id *Identifier) UnmarshalText(text []byte) error {
	if len(text) < 1 || len(text) > 64 || strings.ContainsFunc(string(text), func(r rune) bool { return !isIdentifierRune(r) }) {
		return errors.New("must be 1-64 characters of a-z, A-Z, 0-9, _ and -")
	}
	*id = Identifier(text)
	return nil
}

// Kind names an adapter kind, such as grpc or kafka. Which kinds exist is
// the service's transport table's business, which checks them after Load.
type Kind string

// UnmarshalText checks the shape of a kind: lower-case letters, digits and -.
func (k *Kind) UnmarshalText(text []byte) error {
	if !isKind(string(text)) {
		return errors.New("must be a transport kind: lower-case letters, digits and -")
	}
	*k = Kind(text)
	return nil
}

func isKind(s string) bool {
	return s != "" && len(s) <= 32 && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	})
}

// HostPort is host:port with a non-empty UTF-8 host and a port from 1 to
// 65535.
type HostPort string

// UnmarshalText checks the shape.
func (hp *HostPort) UnmarshalText(text []byte) error {
	if !isHostPort(string(text)) {
		return errors.New(hostPortRule)
	}
	*hp = HostPort(text)
	return nil
}

const hostPortRule = "must be host:port with a port from 1 to 65535"

// utf8Rule is the rule of values sent to the engine as text.
const utf8Rule = "must be UTF-8 text"

// HostPorts is a comma-separated list of HostPort, such as Kafka brokers.
type HostPorts []string

// UnmarshalText splits, trims and checks every item.
func (l *HostPorts) UnmarshalText(text []byte) error {
	items, err := splitList(string(text))
	if err != nil {
		return err
	}
	for _, item := range items {
		if !isHostPort(item) {
			return fmt.Errorf("server %q %s", item, hostPortRule)
		}
	}
	*l = items
	return nil
}

// MarshalText writes the list as it is configured.
func (l HostPorts) MarshalText() ([]byte, error) { return []byte(strings.Join(l, ",")), nil }

// Names is a comma-separated list of names without empty items.
type Names []string

// UnmarshalText splits and trims the items.
func (l *Names) UnmarshalText(text []byte) error {
	items, err := splitList(string(text))
	*l = items
	return err
}

// MarshalText writes the list as it is configured.
func (l Names) MarshalText() ([]byte, error) { return []byte(strings.Join(l, ",")), nil }

func splitList(value string) ([]string, error) {
	items := strings.Split(value, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
		if items[i] == "" {
			return nil, errors.New("must be a comma-separated list without empty items")
		}
	}
	return items, nil
}

// Overrides maps executor types to transport kinds: comma-separated
// type=kind pairs, each type at most once.
type Overrides map[string]Kind

// UnmarshalText parses the pairs.
func (o *Overrides) UnmarshalText(text []byte) error {
	overrides := make(Overrides)
	for pair := range strings.SplitSeq(string(text), ",") {
		pair = strings.TrimSpace(pair)
		typ, kind, found := strings.Cut(pair, "=")
		typ, kind = strings.TrimSpace(typ), strings.TrimSpace(kind)
		if !found || typ == "" || !isKind(kind) {
			return fmt.Errorf("pair %q must be type=kind", pair)
		}
		if _, seen := overrides[typ]; seen {
			return fmt.Errorf("type %q must appear only once", typ)
		}
		overrides[typ] = Kind(kind)
	}
	*o = overrides
	return nil
}

// MarshalText writes the sorted pairs, the form they are configured in.
func (o Overrides) MarshalText() ([]byte, error) {
	pairs := make([]string, 0, len(o))
	for typ, kind := range o {
		pairs = append(pairs, typ+"="+string(kind))
	}
	slices.Sort(pairs)
	return []byte(strings.Join(pairs, ",")), nil
}

// URL is an absolute http or https URL with a host, in UTF-8 (an
// advertised endpoint goes to the engine as text). Shown, its password is
// redacted.
type URL string

// UnmarshalText checks the scheme and the host.
func (u *URL) UnmarshalText(text []byte) error {
	if !utf8.Valid(text) {
		return errors.New(utf8Rule)
	}
	parsed, err := url.Parse(string(text))
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Hostname() == "" {
		return errors.New("must be an absolute http or https URL with a host, such as http://localhost:8080")
	}
	*u = URL(text)
	return nil
}

// MarshalText writes the URL with its password redacted.
func (u URL) MarshalText() ([]byte, error) { return []byte(redactURL(string(u))), nil }

// redactURL hides the password of a URL with credentials in it. A value
// that does not parse, or parses without an authority ("user:pass@host"
// reads as scheme "user"), may hold credentials all the same: a password
// with an unescaped %, # or / is an easy mistake, and the very reason it
// does not parse. Everything between its scheme and its last "@" is hidden
// then.
func redactURL(value string) string {
	u, err := url.Parse(value)
	if err == nil && u.Opaque == "" {
		if u.User != nil {
			return u.Redacted()
		}
		return value
	}
	at := strings.LastIndex(value, "@")
	if at < 0 {
		return value
	}
	start := 0
	if i := strings.Index(value, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return value[:start] + redacted + value[at:]
}

// Topic is a Kafka topic name: 1-249 characters of a-z, A-Z, 0-9, ., _ and
// -, and not . or ..
type Topic string

// UnmarshalText checks the name as a broker would.
func (t *Topic) UnmarshalText(text []byte) error {
	s := string(text)
	valid := len(s) >= 1 && len(s) <= 249 && s != "." && s != ".." &&
		!strings.ContainsFunc(s, func(r rune) bool { return !isIdentifierRune(r) && r != '.' })
	if !valid {
		return errors.New("must be a Kafka topic name: 1-249 characters of a-z, A-Z, 0-9, ., _ and -, and not . or ..")
	}
	*t = Topic(text)
	return nil
}

// File is the path of a readable, non-empty regular file, such as a PEM
// certificate, checked at start-up so that TLS cannot fail later on a typo.
type File string

// UnmarshalText opens the file and reads its start. A failure is told by
// its reason alone: Load shows the path, quoted, and the path as the
// system error words it may hold a line break or other control bytes.
func (f *File) UnmarshalText(text []byte) error {
	path := string(text)
	file, err := os.Open(path)
	if err != nil {
		return cannotRead(err)
	}
	defer file.Close()
	info, err := file.Stat()
	switch {
	case err != nil:
		return cannotRead(err)
	case !info.Mode().IsRegular():
		return errors.New("cannot read: not a regular file")
	}
	if _, err := file.Read(make([]byte, 512)); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("cannot read: the file is empty")
		}
		return cannotRead(err)
	}
	*f = File(path)
	return nil
}

// cannotRead words a file error without the path it names.
func cannotRead(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err
	}
	return errors.New("cannot read: " + err.Error())
}

// Secret is a value never shown: String, LogValue and errors give only its
// length.
type Secret string

// MarshalText shows the secret redacted, or empty when it is unset.
func (s Secret) MarshalText() ([]byte, error) { return redact(string(s)), nil }

// String keeps fmt from printing the secret.
func (s Secret) String() string { return string(redact(string(s))) }

func (Secret) secret() {}

// SigningKey is a Secret long enough to sign HS256 tokens (32 bytes, the
// size of its hash), or empty for no tokens.
type SigningKey string

// UnmarshalText checks the length.
func (k *SigningKey) UnmarshalText(text []byte) error {
	if len(text) < 32 {
		return errors.New("must be empty (no tokens) or at least 32 bytes for HS256")
	}
	*k = SigningKey(text)
	return nil
}

// MarshalText shows the key redacted, or empty when it is unset.
func (k SigningKey) MarshalText() ([]byte, error) { return redact(string(k)), nil }

// String keeps fmt from printing the key.
func (k SigningKey) String() string { return string(redact(string(k))) }

func (SigningKey) secret() {}

// redact is how a secret is shown: empty when unset, else redacted.
func redact(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(redacted)
}

// redacted replaces a secret wherever it would be shown.
const redacted = "[redacted]"

// oneOf parses the value of an enumerated type: one of allowed, exactly.
func oneOf[T ~string](dst *T, text []byte, allowed ...T) error {
	if !slices.Contains(allowed, T(text)) {
		names := make([]string, len(allowed))
		for i, a := range allowed {
			names[i] = string(a)
		}
		return errors.New("must be one of " + strings.Join(names, ", "))
	}
	*dst = T(text)
	return nil
}

// LogLevel is the lowest level logged.
type LogLevel string

// UnmarshalText accepts debug, info, warn and error.
func (l *LogLevel) UnmarshalText(text []byte) error {
	return oneOf(l, text, "debug", "info", "warn", "error")
}

// Slog is the level as a slog.Level; an unknown level (a LogLevel not made
// by parsing) gives slog.LevelInfo.
func (l LogLevel) Slog() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l)); err != nil {
		return slog.LevelInfo
	}
	return level
}

// LogFormat is how log lines are written.
type LogFormat string

// UnmarshalText accepts json and text.
func (f *LogFormat) UnmarshalText(text []byte) error { return oneOf(f, text, "json", "text") }

// Inbound says whether inbound tasks must carry a token.
type Inbound string

// UnmarshalText accepts required and off.
func (i *Inbound) UnmarshalText(text []byte) error { return oneOf(i, text, "required", "off") }

// isIdentifierRune reports whether r may appear in an Identifier.
func isIdentifierRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// isHostPort reports whether value is host:port with a non-empty host and a
// numeric port from 1 to 65535.
func isHostPort(value string) bool {
	host, port, err := net.SplitHostPort(value)
	if err != nil || host == "" || !utf8.ValidString(host) || port == "" || strings.ContainsFunc(port, func(r rune) bool { return r < '0' || r > '9' }) {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// RateLimit is one executor type's entry in RATE_LIMITS: a rate in tasks
// per second and a burst (0: the type's default, one second's worth), or
// Off, which removes a rate limit the type declares.
type RateLimit struct {
	PerSecond float64
	Burst     int
	Off       bool
}

// RateLimits maps executor types to rate limits: comma-separated
// type=RATE/s[:BURST] entries (RATE/m for a rate per minute), or type=off
// (or type=0) to remove a declared limit; each type at most once.
type RateLimits map[string]RateLimit

// rateLimitForm is how an entry must look, for error messages.
const rateLimitForm = "type=RATE/s[:BURST], type=RATE/m[:BURST] or type=off (e.g. payment-processor=50/s:10)"

// UnmarshalText parses the entries; an error names the entry.
func (r *RateLimits) UnmarshalText(text []byte) error {
	limits := make(RateLimits)
	for entry := range strings.SplitSeq(string(text), ",") {
		entry = strings.TrimSpace(entry)
		typ, spec, found := strings.Cut(entry, "=")
		typ, spec = strings.TrimSpace(typ), strings.TrimSpace(spec)
		if !found || typ == "" {
			return fmt.Errorf("entry %q must be %s", entry, rateLimitForm)
		}
		limit, err := parseRateLimit(spec)
		if err != nil {
			return fmt.Errorf("entry %q: %w", entry, err)
		}
		if _, seen := limits[typ]; seen {
			return fmt.Errorf("type %q must appear only once", typ)
		}
		limits[typ] = limit
	}
	*r = limits
	return nil
}

// parseRateLimit parses RATE/s[:BURST], RATE/m[:BURST], 0 or off.
func parseRateLimit(spec string) (RateLimit, error) {
	if spec == "0" || strings.EqualFold(spec, "off") {
		return RateLimit{Off: true}, nil
	}
	rateText, burstText, hasBurst := strings.Cut(spec, ":")
	number, unit, found := strings.Cut(rateText, "/")
	var perUnit float64
	switch {
	case !found:
		return RateLimit{}, fmt.Errorf("must be %s", rateLimitForm)
	case unit == "s":
		perUnit = 1
	case unit == "m":
		perUnit = 60
	default:
		return RateLimit{}, fmt.Errorf("unit %q must be s (per second) or m (per minute)", unit)
	}
	rate, err := strconv.ParseFloat(number, 64)
	if err != nil || !(rate > 0) || math.IsInf(rate, 0) {
		return RateLimit{}, fmt.Errorf("rate %q must be a positive number", number)
	}
	limit := RateLimit{PerSecond: rate / perUnit}
	if hasBurst {
		burst, err := strconv.Atoi(burstText)
		if err != nil || burst < 1 {
			return RateLimit{}, fmt.Errorf("burst %q must be a whole number of at least 1", burstText)
		}
		limit.Burst = burst
	}
	return limit, nil
}

// MarshalText writes the sorted entries, the form they are configured in
// (a rate per minute is written per second).
func (r RateLimits) MarshalText() ([]byte, error) {
	entries := make([]string, 0, len(r))
	for typ, l := range r {
		switch {
		case l.Off:
			entries = append(entries, typ+"=off")
		case l.Burst == 0:
			entries = append(entries, typ+"="+strconv.FormatFloat(l.PerSecond, 'g', -1, 64)+"/s")
		default:
			entries = append(entries, typ+"="+strconv.FormatFloat(l.PerSecond, 'g', -1, 64)+"/s:"+strconv.Itoa(l.Burst))
		}
	}
	slices.Sort(entries)
	return []byte(strings.Join(entries, ",")), nil
}
