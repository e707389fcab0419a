package config

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/caarlos0/env/v11"
)

// A section is a struct of variables, like Config: each field has an env
// tag naming its variable, an envDefault tag and a doc tag, and a type that
// parses itself (the types of values.go, string, bool). Config is the first
// section; each transport adds its own (GRPC, Kafka, REST, or a fork's), so
// that a transport's variables live with it.

// Variable describes one environment variable read by Load.
type Variable struct {
	// Name is the full variable name.
	Name string
	// Default is the value used when the variable is empty or unset; empty
	// means there is no default (see Doc for what that means).
	Default string
	// Doc says what the variable means and what values it accepts.
	Doc string
}

// Problem is one wrong variable: Load reports it as NAME=value: Rule.
type Problem struct {
	Variable string
	Rule     string
}

// Checker is a section with rules that span several of its variables.
// Load calls Check only when every variable of the section parsed.
type Checker interface {
	Check() []Problem
}

// Load reads the variables of Config and of each section (pointers to
// section structs) once through getenv, parses and checks them, and returns
// Config with the sections filled in, or an error of one line naming the
// first wrong variable (Config's first, then the sections' in order), its
// value and what is allowed. An empty variable counts as unset and takes
// its default, because getenv cannot tell the two apart.
func Load(getenv func(string) string, sections ...any) (Config, error) {
	if getenv == nil {
		return Config{}, errors.New("load config: getenv is nil")
	}
	var cfg Config
	all := append([]any{&cfg}, sections...)
	l := loader{environment: make(map[string]string), order: make(map[string]int), defaults: make(map[string]string)}
	for _, section := range all {
		if err := l.parse(section, getenv); err != nil {
			return Config{}, err
		}
	}
	if err := l.first(); err != nil {
		for _, section := range sections {
			reflect.ValueOf(section).Elem().SetZero()
		}
		return Config{}, err
	}
	return cfg, nil
}

// Variables lists every variable of Config and of the sections, in order,
// from their tags: the README's table and the tests share this one source.
func Variables(sections ...any) []Variable {
	var vars []Variable
	for _, section := range append([]any{Config{}}, sections...) {
		for _, field := range variableFields(reflect.TypeOf(section)) {
			vars = append(vars, Variable{Name: field.Tag.Get("env"), Default: field.Tag.Get("envDefault"), Doc: field.Tag.Get("doc")})
		}
	}
	return vars
}

// variableFields are the fields of a section (or a pointer to one) that are
// variables.
func variableFields(t reflect.Type) []reflect.StructField {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var fields []reflect.StructField
	for i := range t.NumField() {
		if _, ok := t.Field(i).Tag.Lookup("env"); ok {
			fields = append(fields, t.Field(i))
		}
	}
	return fields
}

// loader collects what one Load read and the problems it found.
type loader struct {
	environment map[string]string
	defaults    map[string]string
	order       map[string]int
	secrets     map[string]bool
	problems    []Problem
}

// parse reads one section's variables, parses them and, when they all
// parsed, applies the section's own rules.
func (l *loader) parse(section any, getenv func(string) string) error {
	value := reflect.ValueOf(section)
	if value.Kind() != reflect.Pointer || value.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("load config: section %T is not a pointer to a struct", section)
	}
	byField := make(map[string]string)
	environment := make(map[string]string)
	for _, field := range variableFields(value.Type()) {
		name := field.Tag.Get("env")
		if _, dup := l.order[name]; dup {
			return fmt.Errorf("load config: %s is declared twice", name)
		}
		l.order[name] = len(l.order)
		l.defaults[name] = field.Tag.Get("envDefault")
		if reflect.PointerTo(field.Type).Implements(reflect.TypeFor[interface{ secret() }]()) || field.Type.Implements(reflect.TypeFor[interface{ secret() }]()) {
			if l.secrets == nil {
				l.secrets = make(map[string]bool)
			}
			l.secrets[name] = true
		}
		byField[field.Name] = name
		environment[name] = getenv(name)
		l.environment[name] = environment[name]
	}
	err := env.ParseWithOptions(section, env.Options{Environment: environment})
	if err == nil {
		if checker, ok := section.(Checker); ok {
			l.problems = append(l.problems, checker.Check()...)
		}
		return nil
	}
	var aggregate env.AggregateError
	if !errors.As(err, &aggregate) {
		return fmt.Errorf("load config: %w", err)
	}
	for _, fieldErr := range aggregate.Errors {
		var parseErr env.ParseError
		name, ok := "", false
		if errors.As(fieldErr, &parseErr) {
			name, ok = byField[parseErr.Name]
		}
		if !ok {
			return fmt.Errorf("load config: %w", fieldErr) // a defect of the section's type
		}
		l.problems = append(l.problems, Problem{Variable: name, Rule: parseRule(parseErr)})
	}
	return nil
}

// parseRule is what a value that did not parse breaks: the self-parsing
// types word their errors as rules; bool is the one plain type used.
func parseRule(err env.ParseError) string {
	if err.Type != nil && err.Type.Kind() == reflect.Bool {
		return "must be true or false"
	}
	return err.Err.Error()
}

// first returns the problem of the first variable in order, as one line.
func (l *loader) first() error {
	if len(l.problems) == 0 {
		return nil
	}
	position := func(variable string) int {
		if i, ok := l.order[variable]; ok {
			return i
		}
		return len(l.order)
	}
	p := slices.MinFunc(l.problems, func(a, b Problem) int {
		return cmp.Compare(position(a.Variable), position(b.Variable))
	})
	return errors.New(p.Variable + "=" + l.shown(p.Variable) + ": " + p.Rule)
}

// shown is a variable's value as errors show it: quoted, with a URL's
// password redacted, or only its length for a secret.
func (l *loader) shown(variable string) string {
	value := l.environment[variable]
	if value == "" {
		value = l.defaults[variable]
	}
	if l.secrets[variable] {
		return fmt.Sprintf("[redacted, %d bytes]", len(value))
	}
	return strconv.Quote(redactURL(value))
}

// renderedField is one variable of a section ready for output.
type renderedField struct {
	name  string
	text  string
	value slog.Value
}

// render shows every variable of a section in order, as it is configured,
// with secrets and URL passwords redacted by their types.
func render(section any) []renderedField {
	v := reflect.ValueOf(section)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var out []renderedField
	for i := range v.NumField() {
		field := v.Type().Field(i)
		name, ok := field.Tag.Lookup("env")
		if !ok {
			continue
		}
		f := renderedField{name: name}
		switch value := v.Field(i).Interface().(type) {
		case encoding.TextMarshaler:
			text, _ := value.MarshalText()
			f.text, f.value = string(text), slog.StringValue(string(text))
			if n, err := strconv.Atoi(f.text); err == nil && v.Field(i).CanInt() {
				f.value = slog.IntValue(n)
			}
		case bool:
			f.text, f.value = strconv.FormatBool(value), slog.BoolValue(value)
		default:
			f.text = fmt.Sprint(value)
			f.value = slog.StringValue(f.text)
		}
		out = append(out, f)
	}
	return out
}

// Show renders a section's variables as NAME="value" on one line, secrets
// redacted.
func Show(section any) string {
	var b strings.Builder
	for i, f := range render(section) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(f.text))
	}
	return b.String()
}

// LogValue renders a section's variables as attributes keyed by their
// names, secrets redacted.
func LogValue(section any) slog.Value {
	fields := render(section)
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		attrs = append(attrs, slog.Attr{Key: f.name, Value: f.value})
	}
	return slog.GroupValue(attrs...)
}
