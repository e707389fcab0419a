package config

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// prefix starts the name of every variable but PAYMENT_GATEWAY_DELAY.
const prefix = "GAMELAN_EXECUTOR_"

// jwtSecretVariable holds the token secret.
const jwtSecretVariable = prefix + "JWT_SECRET"

// isSecret reports whether a variable's value must never be shown.
func isSecret(variable string) bool {
	return variable == jwtSecretVariable || variable == prefix+"KAFKA_SASL_PASSWORD"
}

// Texts of the rules shared by parsing and validation.
const (
	durationRule   = "must be a Go duration of at least 0, such as 2s, 500ms or 1m30s"
	boolRule       = "must be true or false"
	hostPortRule   = "must be host:port with a port from 1 to 65535"
	identifierRule = "must be 1-64 characters of a-z, A-Z, 0-9, _ and -"
	topicRule      = "must be a Kafka topic name: 1-249 characters of a-z, A-Z, 0-9, ., _ and -, and not . or .."
	listRule       = "must be a comma-separated list without empty items"
)

// Accepted values of the enumerated variables other than the adapter kinds.
var (
	grpcIntakes         = []string{"push", "stream", "bidi"}
	kafkaSASLMechanisms = []string{"", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
	restResultSinks     = []string{"grpc", "kafka"}
	jwtInbounds         = []string{"required", "off"}
	logLevels           = []string{"debug", "info", "warn", "error"}
	logFormats          = []string{"json", "text"}
)

// minSecretBytes is the shortest JWT_SECRET accepted: HS256 wants a key at
// least as long as its 256-bit hash.
const minSecretBytes = 32

// problem is one wrong variable. Its Error is the one line Load returns.
type problem struct {
	variable string
	shown    string
	allowed  string
}

func (p *problem) Error() string { return p.variable + "=" + p.shown + ": " + p.allowed }

// validator collects the problems of one Load and picks the one to report.
type validator struct {
	environment map[string]string
	defaults    map[string]string
	order       map[string]int
	// unparsed holds the variables caarlos0/env could not convert; their
	// fields are zero, so no other rule may judge them.
	unparsed map[string]bool
	problems []*problem
}

func newValidator(environment map[string]string) *validator {
	v := &validator{
		environment: environment,
		defaults:    make(map[string]string),
		order:       make(map[string]int),
		unparsed:    make(map[string]bool),
	}
	for i, variable := range Variables() {
		v.order[variable.Name] = i
		v.defaults[variable.Name] = variable.Default
	}
	return v
}

// shown is the value of variable as error messages show it: quoted, or only
// its length for the secret.
func (v *validator) shown(variable string) string {
	value := v.environment[variable]
	if value == "" {
		value = v.defaults[variable]
	}
	if isSecret(variable) {
		return fmt.Sprintf("[redacted, %d bytes]", len(value))
	}
	return strconv.Quote(redactURL(value))
}

// fail records that variable's value breaks the rule described by allowed.
func (v *validator) fail(variable, allowed string) {
	v.problems = append(v.problems, &problem{variable: variable, shown: v.shown(variable), allowed: allowed})
}

// failed reports whether variable already has a problem, so that rules
// relating two variables do not blame one for the other's bad value.
func (v *validator) failed(variable string) bool {
	return v.unparsed[variable] || slices.ContainsFunc(v.problems, func(p *problem) bool { return p.variable == variable })
}

// first returns the problem of the first variable in struct order, or nil.
func (v *validator) first() error {
	if len(v.problems) == 0 {
		return nil
	}
	position := func(variable string) int {
		if i, ok := v.order[variable]; ok {
			return i
		}
		return len(v.order)
	}
	return slices.MinFunc(v.problems, func(a, b *problem) int {
		return cmp.Compare(position(a.variable), position(b.variable))
	})
}

// parseFailures records a problem for each field caarlos0/env could not
// convert, naming the variable instead of the Go field. Any other error is
// a defect of the Config struct and is returned as is.
func (v *validator) parseFailures(err error) error {
	var aggregate env.AggregateError
	if !errors.As(err, &aggregate) {
		return fmt.Errorf("load config: %w", err)
	}
	configType := reflect.TypeFor[Config]()
	for _, fieldErr := range aggregate.Errors {
		var parseErr env.ParseError
		if !errors.As(fieldErr, &parseErr) {
			return fmt.Errorf("load config: %w", fieldErr)
		}
		field, ok := configType.FieldByName(parseErr.Name)
		if !ok {
			return fmt.Errorf("load config: %w", fieldErr)
		}
		variable := field.Tag.Get("env")
		v.unparsed[variable] = true
		v.fail(variable, parseRule(field, parseErr.Err))
	}
	return nil
}

// parseRule says what field accepts, for a value that did not parse.
func parseRule(field reflect.StructField, err error) string {
	switch {
	case field.Type == reflect.TypeFor[time.Duration]():
		return durationRule
	case field.Type.Kind() == reflect.Int:
		return rangeRule(field)
	case field.Type.Kind() == reflect.Bool:
		return boolRule
	default:
		// parseList and parseOverrides word their errors as rules.
		return err.Error()
	}
}

// bounds returns the inclusive range of an int field from its min and max
// tags. Without max, the bound is what caarlos0/env can parse.
func bounds(field reflect.StructField) (low, high int64) {
	low, err := strconv.ParseInt(field.Tag.Get("min"), 10, 64)
	if err != nil {
		low = math.MinInt32
	}
	high, err = strconv.ParseInt(field.Tag.Get("max"), 10, 64)
	if err != nil {
		high = math.MaxInt32
	}
	return low, high
}

// rangeRule words the range of an int field.
func rangeRule(field reflect.StructField) string {
	rule := "must be a whole number of at least " + field.Tag.Get("min")
	if high := field.Tag.Get("max"); high != "" {
		rule += " and at most " + high
	}
	return rule
}

// config applies every rule to a parsed Config.
func (v *validator) config(c Config) {
	v.ranges(c)

	v.identifier(prefix+"NAME", c.Name)
	v.nonBlank(prefix+"VERSION", c.Version)
	if c.InstanceID != "" {
		v.identifier(prefix+"INSTANCE_ID", c.InstanceID)
	}

	v.httpURL(prefix+"ENGINE_URL", c.EngineURL)
	v.hostPort(prefix+"ENGINE_GRPC_TARGET", c.EngineGRPCTarget)

	v.oneOf(prefix+"TRANSPORT", c.Transport, transportKinds)
	v.oneOf(prefix+"REGISTRAR", c.Registrar, registrarKinds)
	for _, typ := range slices.Sorted(maps.Keys(c.TransportOverrides)) {
		if kind := c.TransportOverrides[typ]; !slices.Contains(transportKinds, kind) {
			v.fail(prefix+"TRANSPORT_OVERRIDES",
				fmt.Sprintf("transport %q of type %q must be one of %s", kind, typ, strings.Join(transportKinds, ", ")))
			break
		}
	}

	v.oneOf(prefix+"GRPC_INTAKE", c.GRPCIntake, grpcIntakes)
	v.nonBlank(prefix+"GRPC_HOST", c.GRPCHost)
	if c.GRPCAdvertisedEndpoint != "" {
		v.hostPort(prefix+"GRPC_ADVERTISED_ENDPOINT", c.GRPCAdvertisedEndpoint)
	}
	if c.GRPCUseSSL && (c.GRPCCertificatePath == "" || c.GRPCPrivateKeyPath == "") {
		v.fail(prefix+"GRPC_USE_SSL",
			"requires "+prefix+"GRPC_CERTIFICATE_PATH and "+prefix+"GRPC_PRIVATE_KEY_PATH to be set")
	}
	v.readableFile(prefix+"GRPC_CERTIFICATE_PATH", c.GRPCCertificatePath)
	v.readableFile(prefix+"GRPC_PRIVATE_KEY_PATH", c.GRPCPrivateKeyPath)
	v.readableFile(prefix+"GRPC_CLIENT_CERTIFICATE_PATH", c.GRPCClientCertificatePath)
	v.readableFile(prefix+"GRPC_CLIENT_PRIVATE_KEY_PATH", c.GRPCClientPrivateKeyPath)
	if (c.GRPCClientCertificatePath == "") != (c.GRPCClientPrivateKeyPath == "") {
		v.fail(prefix+"GRPC_CLIENT_CERTIFICATE_PATH", "must be set together with GRPC_CLIENT_PRIVATE_KEY_PATH, or both left empty")
	}
	v.readableFile(prefix+"GRPC_CA_CERTIFICATE_PATH", c.GRPCCACertificatePath)
	v.oneOf(prefix+"KAFKA_SASL_MECHANISM", c.KafkaSASLMechanism, kafkaSASLMechanisms)
	v.oneOf(prefix+"REST_RESULT_SINK", c.RESTResultSink, restResultSinks)
	v.nonBlank(prefix+"REST_HOST", c.RESTHost)
	if c.RESTAdvertisedEndpoint != "" {
		v.httpURL(prefix+"REST_ADVERTISED_ENDPOINT", c.RESTAdvertisedEndpoint)
	}
	if c.KafkaSASLMechanism != "" && strings.TrimSpace(c.KafkaSASLUsername) == "" {
		v.fail(prefix+"KAFKA_SASL_USERNAME", "must be set when GAMELAN_EXECUTOR_KAFKA_SASL_MECHANISM is")
	}
	v.readableFile(prefix+"KAFKA_CA_CERTIFICATE_PATH", c.KafkaCACertificatePath)
	v.readableFile(prefix+"KAFKA_CLIENT_CERTIFICATE_PATH", c.KafkaClientCertificatePath)
	v.readableFile(prefix+"KAFKA_CLIENT_PRIVATE_KEY_PATH", c.KafkaClientPrivateKeyPath)
	if (c.KafkaClientCertificatePath == "") != (c.KafkaClientPrivateKeyPath == "") {
		v.fail(prefix+"KAFKA_CLIENT_CERTIFICATE_PATH", "must be set together with KAFKA_CLIENT_PRIVATE_KEY_PATH, or both left empty")
	}

	for _, server := range c.KafkaBootstrapServers {
		if !isHostPort(server) {
			v.fail(prefix+"KAFKA_BOOTSTRAP_SERVERS", fmt.Sprintf("server %q %s", server, hostPortRule))
			break
		}
	}
	v.topic(prefix+"KAFKA_TASKS_TOPIC", c.KafkaTasksTopic)
	v.topic(prefix+"KAFKA_RESULTS_TOPIC", c.KafkaResultsTopic)
	v.topic(prefix+"KAFKA_REGISTRATIONS_TOPIC", c.KafkaRegistrationsTopic)
	v.topic(prefix+"KAFKA_HEARTBEATS_TOPIC", c.KafkaHeartbeatsTopic)
	v.topic(prefix+"KAFKA_UNREGISTRATIONS_TOPIC", c.KafkaUnregistrationsTopic)

	if c.JWTSecret != "" && len(c.JWTSecret) < minSecretBytes {
		v.fail(jwtSecretVariable, fmt.Sprintf("must be empty (no tokens) or at least %d bytes for HS256", minSecretBytes))
	}
	v.nonBlank(prefix+"JWT_ISSUER", c.JWTIssuer)
	v.nonBlank(prefix+"JWT_INBOUND_ISSUER", c.JWTInboundIssuer)
	v.nonBlank(prefix+"JWT_AUDIENCE", c.JWTAudience)
	v.oneOf(prefix+"JWT_INBOUND", c.JWTInbound, jwtInbounds)

	interval, timeout := prefix+"HEARTBEAT_INTERVAL_SECONDS", prefix+"HEARTBEAT_TIMEOUT_SECONDS"
	if !v.failed(interval) && !v.failed(timeout) && c.HeartbeatIntervalSeconds >= c.HeartbeatTimeoutSeconds {
		v.fail(interval, fmt.Sprintf("must be below %s (%d)", timeout, c.HeartbeatTimeoutSeconds))
	}

	v.nonBlank(prefix+"HTTP_HOST", c.HTTPHost)
	v.oneOf(prefix+"LOG_LEVEL", c.LogLevel, logLevels)
	v.oneOf(prefix+"LOG_FORMAT", c.LogFormat, logFormats)

	if !v.unparsed["PAYMENT_GATEWAY_DELAY"] && c.PaymentGatewayDelay < 0 {
		v.fail("PAYMENT_GATEWAY_DELAY", durationRule)
	}
}

// ranges checks every int field against its min and max tags.
func (v *validator) ranges(c Config) {
	value := reflect.ValueOf(c)
	configType := value.Type()
	for i := range configType.NumField() {
		field := configType.Field(i)
		variable := field.Tag.Get("env")
		if field.Type.Kind() != reflect.Int || v.unparsed[variable] {
			continue
		}
		low, high := bounds(field)
		if n := value.Field(i).Int(); n < low || n > high {
			v.fail(variable, rangeRule(field))
		}
	}
}

// nonBlank rejects a value that is empty or only white space.
func (v *validator) nonBlank(variable, value string) {
	if strings.TrimSpace(value) == "" {
		v.fail(variable, "must not be blank")
	}
}

// oneOf rejects a value that is not exactly one of allowed.
func (v *validator) oneOf(variable, value string, allowed []string) {
	if !slices.Contains(allowed, value) {
		v.fail(variable, "must be one of "+strings.Join(allowed, ", "))
	}
}

// identifier rejects a value unfit to prefix executor ids.
func (v *validator) identifier(variable, value string) {
	if len(value) < 1 || len(value) > 64 || strings.ContainsFunc(value, func(r rune) bool { return !isIdentifierRune(r) }) {
		v.fail(variable, identifierRule)
	}
}

// topic rejects a value Kafka would refuse as a topic name.
func (v *validator) topic(variable, value string) {
	valid := len(value) >= 1 && len(value) <= 249 && value != "." && value != ".." &&
		!strings.ContainsFunc(value, func(r rune) bool { return !isIdentifierRune(r) && r != '.' })
	if !valid {
		v.fail(variable, topicRule)
	}
}

// hostPort rejects a value that is not host:port with a usable port.
func (v *validator) hostPort(variable, value string) {
	if !isHostPort(value) {
		v.fail(variable, hostPortRule)
	}
}

// httpURL rejects a value that is not an absolute http or https URL with a host.
func (v *validator) httpURL(variable, value string) {
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		v.fail(variable, "must be an absolute http or https URL with a host, such as http://localhost:8080")
	}
}

// readableFile checks that a path, when set, names a regular file that can
// be opened and read, so that TLS set-up cannot fail later on a typo.
func (v *validator) readableFile(variable, path string) {
	if path == "" {
		return
	}
	file, err := os.Open(path)
	if err != nil {
		v.fail(variable, "cannot read: "+err.Error())
		return
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		v.fail(variable, "cannot read: "+err.Error())
		return
	}
	if !info.Mode().IsRegular() {
		v.fail(variable, "cannot read: not a regular file")
		return
	}
	if _, err := file.Read(make([]byte, 512)); err != nil {
		if errors.Is(err, io.EOF) {
			v.fail(variable, "cannot read: the file is empty")
			return
		}
		v.fail(variable, "cannot read: "+err.Error())
	}
}

// isIdentifierRune reports whether r may appear in NAME and INSTANCE_ID.
func isIdentifierRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// isHostPort reports whether value is host:port with a non-empty host and a
// numeric port from 1 to 65535.
func isHostPort(value string) bool {
	host, port, err := net.SplitHostPort(value)
	if err != nil || host == "" || port == "" || strings.ContainsFunc(port, func(r rune) bool { return r < '0' || r > '9' }) {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// parseList is the caarlos0/env parser of every []string field: items are
// separated by commas and trimmed, and none may be empty.
func parseList(value string) (any, error) {
	items := strings.Split(value, ",")
	list := make([]string, 0, len(items))
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, errors.New(listRule)
		}
		list = append(list, item)
	}
	return list, nil
}

// parseOverrides is the caarlos0/env parser of TRANSPORT_OVERRIDES:
// comma-separated type=kind pairs, trimmed, each type at most once. The
// kinds are checked by the validator.
func parseOverrides(value string) (any, error) {
	overrides := make(map[string]string)
	for pair := range strings.SplitSeq(value, ",") {
		pair = strings.TrimSpace(pair)
		typ, kind, found := strings.Cut(pair, "=")
		typ, kind = strings.TrimSpace(typ), strings.TrimSpace(kind)
		if !found || typ == "" || kind == "" {
			return nil, fmt.Errorf("pair %q must be type=kind, kind one of %s", pair, strings.Join(transportKinds, ", "))
		}
		if _, seen := overrides[typ]; seen {
			return nil, fmt.Errorf("type %q must appear only once", typ)
		}
		overrides[typ] = kind
	}
	return overrides, nil
}
