package config

import (
	"encoding"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The fuzz targets of the configuration: each typed value of values.go
// alone, and Load over an environment with any value in any variable. Seed
// corpora are under testdata/fuzz/<target>.

// fuzzValueTypes are the self-parsing types of values.go and of the
// sections, each as a constructor of a fresh value to parse into.
var fuzzValueTypes = []func() encoding.TextUnmarshaler{
	func() encoding.TextUnmarshaler { return new(Int[AtLeast0]) },
	func() encoding.TextUnmarshaler { return new(Int[AtLeast1]) },
	func() encoding.TextUnmarshaler { return new(Int[PortRange]) },
	func() encoding.TextUnmarshaler { return new(Int[AtLeast1KiB]) },
	func() encoding.TextUnmarshaler { return new(Int[HTTP2Window]) },
	func() encoding.TextUnmarshaler { return new(Seconds[UpToAYear]) },
	func() encoding.TextUnmarshaler { return new(Seconds[ZeroToAYear]) },
	func() encoding.TextUnmarshaler { return new(Seconds[KeepAliveRange]) },
	func() encoding.TextUnmarshaler { return new(Seconds[TokenLifetime]) },
	func() encoding.TextUnmarshaler { return new(Seconds[RequestTimeout]) },
	func() encoding.TextUnmarshaler { return new(Delay) },
	func() encoding.TextUnmarshaler { return new(Text) },
	func() encoding.TextUnmarshaler { return new(Identifier) },
	func() encoding.TextUnmarshaler { return new(Kind) },
	func() encoding.TextUnmarshaler { return new(HostPort) },
	func() encoding.TextUnmarshaler { return new(HostPorts) },
	func() encoding.TextUnmarshaler { return new(Names) },
	func() encoding.TextUnmarshaler { return new(Overrides) },
	func() encoding.TextUnmarshaler { return new(URL) },
	func() encoding.TextUnmarshaler { return new(Topic) },
	func() encoding.TextUnmarshaler { return new(File) },
	func() encoding.TextUnmarshaler { return new(SigningKey) },
	func() encoding.TextUnmarshaler { return new(LogLevel) },
	func() encoding.TextUnmarshaler { return new(LogFormat) },
	func() encoding.TextUnmarshaler { return new(Inbound) },
	func() encoding.TextUnmarshaler { return new(GRPCIntake) },
	func() encoding.TextUnmarshaler { return new(ResultSink) },
	func() encoding.TextUnmarshaler { return new(SASLMechanism) },
	func() encoding.TextUnmarshaler { return new(KafkaOrdering) },
}

// FuzzValue parses any text as any of the typed values (kind picks one).
// The text either
//   - is refused with a rule: one line of printable text (Load puts it
//     after the variable's name and quoted value), or
//   - gives a value that round-trips: written as its variable would be
//     (MarshalText; the string itself for plain string types) and parsed
//     again, it is the same value (secrets and URL passwords are shown
//     redacted, so they are not compared); text that reaches the engine
//     (Text, HostPort, URL) is UTF-8, as protobuf strings must be.
func FuzzValue(f *testing.F) {
	f.Add(uint8(0), "42")
	f.Fuzz(func(t *testing.T, kind uint8, text string) {
		v := fuzzValueTypes[int(kind)%len(fuzzValueTypes)]()
		if err := v.UnmarshalText([]byte(text)); err != nil {
			requireRule(t, err.Error())
			return
		}
		switch x := v.(type) {
		case *Text:
			requireUTF8(t, string(*x))
		case *HostPort:
			requireUTF8(t, string(*x))
		case *URL:
			requireUTF8(t, string(*x))
			if parsed, err := url.Parse(string(*x)); err == nil && parsed.User != nil {
				return // the password is shown redacted
			}
		case *SigningKey:
			return // shown redacted
		}
		written := writtenForm(t, v)
		again := reflect.New(reflect.TypeOf(v).Elem()).Interface().(encoding.TextUnmarshaler)
		if err := again.UnmarshalText([]byte(written)); err != nil {
			t.Fatalf("%T %q is written %q, which does not parse: %v", v, text, written, err)
		}
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("%T %q is written %q, which parses as another value: %#v, not %#v", v, text, written, again, v)
		}
	})
}

// writtenForm is how v is written in its variable.
func writtenForm(t *testing.T, v encoding.TextUnmarshaler) string {
	t.Helper()
	value := reflect.ValueOf(v).Elem()
	if m, ok := value.Interface().(encoding.TextMarshaler); ok {
		text, err := m.MarshalText()
		if err != nil {
			t.Fatalf("%T does not write itself: %v", v, err)
		}
		return string(text)
	}
	if value.Kind() != reflect.String {
		t.Fatalf("%T is neither a TextMarshaler nor a string", v)
	}
	return value.String()
}

// requireRule checks a rule: not empty, one line of printable characters.
func requireRule(t *testing.T, rule string) {
	t.Helper()
	if rule == "" || !utf8.ValidString(rule) || strings.ContainsFunc(rule, func(r rune) bool { return !unicode.IsPrint(r) }) {
		t.Fatalf("rule %q is not one line of printable text", rule)
	}
}

func requireUTF8(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("accepted %q, which is not UTF-8", s)
	}
}

// fuzzVariables are the variables of Config and of the shipped sections,
// in Load's order.
var fuzzVariables = Variables(&GRPC{}, &REST{}, &Kafka{})

// secretVariables are the variables whose values are never shown.
var secretVariables = []string{"GAMELAN_EXECUTOR_JWT_SECRET", "GAMELAN_EXECUTOR_KAFKA_SASL_PASSWORD"}

// FuzzLoad sets one or two variables (picked by index) to any text and
// loads the whole configuration, as the service does. Load either
//   - fails with one line of printable text, naming a variable that was
//     set (its first wrong one), or one whose rule names a variable that
//     was set (a rule spanning several variables); the same error, whatever
//     the secrets' content (only their length shows), or
//   - succeeds, with a configuration that round-trips: every variable
//     written back as String shows it and loaded again gives the same
//     configuration; and String, Show and LogValue are the same whatever
//     the secrets' content.
func FuzzLoad(f *testing.F) {
	f.Add(uint8(0), "executor", uint8(1), "1.0.0")
	f.Fuzz(func(t *testing.T, first uint8, firstValue string, second uint8, secondValue string) {
		env := map[string]string{}
		a := fuzzVariables[int(first)%len(fuzzVariables)].Name
		b := fuzzVariables[int(second)%len(fuzzVariables)].Name
		env[b] = secondValue
		env[a] = firstValue // a wins when both pick the same variable

		got, err := loadAll(env)
		masked, maskedErr := loadAll(maskSecrets(env))
		if (err == nil) != (maskedErr == nil) || err != nil && err.Error() != maskedErr.Error() {
			t.Fatalf("the secrets' content changes the outcome: %v, then %v", err, maskedErr)
		}
		if err != nil {
			requireNamesASetVariable(t, err.Error(), env)
			return
		}
		shown := showAll(got)
		if shown != showAll(masked) || got.String() != masked.String() ||
			got.LogValue().String() != masked.LogValue().String() {
			t.Fatalf("a secret's content shows:\n%s\n%s", shown, showAll(masked))
		}

		// Written back and loaded again: the same configuration.
		again, err := loadAll(writtenEnvironment(got, env))
		if err != nil {
			t.Fatalf("the configuration, written back, does not load: %v\n%s", err, shown)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("the configuration, written back, loads differently:\nfirst:  %s\nsecond: %s", shown, showAll(again))
		}
	})
}

// loaded is Config and its shipped sections.
type loaded struct {
	Config
	GRPC  GRPC
	REST  REST
	Kafka Kafka
}

func loadAll(env map[string]string) (loaded, error) {
	var l loaded
	cfg, err := Load(func(name string) string { return env[name] }, &l.GRPC, &l.REST, &l.Kafka)
	l.Config = cfg
	return l, err
}

func showAll(l loaded) string {
	return Show(l.Config) + " " + Show(l.GRPC) + " " + Show(l.REST) + " " + Show(l.Kafka)
}

// maskSecrets returns env with each secret replaced by as many x: the same
// length, another content.
func maskSecrets(env map[string]string) map[string]string {
	masked := make(map[string]string, len(env))
	for k, v := range env {
		if slices.Contains(secretVariables, k) {
			v = strings.Repeat("x", len(v))
		}
		masked[k] = v
	}
	return masked
}

// writtenEnvironment is the environment that writes l as Show shows it;
// secrets and URLs with a password, which Show redacts, keep their value
// from env.
func writtenEnvironment(l loaded, env map[string]string) map[string]string {
	written := make(map[string]string)
	for _, section := range []any{l.Config, l.GRPC, l.REST, l.Kafka} {
		for _, f := range render(section) {
			written[f.name] = f.text
		}
	}
	for name, value := range env {
		if u, err := url.Parse(value); slices.Contains(secretVariables, name) || err == nil && u.User != nil {
			written[name] = value
		}
	}
	return written
}

// requireNamesASetVariable checks a Load error: one line, NAME=value:
// rule, NAME a declared variable, and NAME or the rule naming a variable
// that was set.
func requireNamesASetVariable(t *testing.T, msg string, env map[string]string) {
	t.Helper()
	requireRule(t, msg)
	name, _, ok := strings.Cut(msg, "=")
	if !ok || !slices.ContainsFunc(fuzzVariables, func(v Variable) bool { return v.Name == name }) {
		t.Fatalf("error %q does not start with a variable's name", msg)
	}
	if _, set := env[name]; set {
		return
	}
	for set := range env {
		if strings.Contains(msg, strings.TrimPrefix(set, "GAMELAN_EXECUTOR_")) {
			return
		}
	}
	t.Fatalf("error %q names neither variable set: %v", msg, slices.Sorted(maps.Keys(env)))
}
