package executor

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Number reads a numeric input variable. It accepts JSON numbers (float64,
// json.Number), Go integers, and numeric strings, because the Gamelan push
// path delivers every variable as a string.
func Number(vars map[string]any, key string) (float64, error) {
	v, ok := vars[key]
	if !ok || v == nil {
		return 0, errMissing(key)
	}
	var f float64
	switch n := v.(type) {
	case float64:
		f = n
	case float32:
		f = float64(n)
	case int, int8, int16, int32, int64:
		f = float64(reflect.ValueOf(n).Int())
	case uint, uint8, uint16, uint32, uint64:
		f = float64(reflect.ValueOf(n).Uint())
	case json.Number:
		parsed, err := n.Float64()
		if err != nil {
			return 0, fmt.Errorf("%q is not a number: %q", key, n.String())
		}
		f = parsed
	case string:
		parsed, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number: %q", key, n)
		}
		f = parsed
	default:
		return 0, fmt.Errorf("%q is not a number: %T", key, v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a finite number", key)
	}
	return f, nil
}

// String reads a non-empty string input variable. Numbers and booleans are
// not converted: a handler that wants them asks for them.
func String(vars map[string]any, key string) (string, error) {
	v, ok := vars[key]
	if !ok || v == nil {
		return "", errMissing(key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%q is not a string: %T", key, v)
	}
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%q is empty", key)
	}
	return s, nil
}
