package security_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
)

// TestSingleBearerToken checks the rule of issue 14: a request's token is
// taken only from exactly one authorization value. Before it, the adapters
// read the first value and ignored the others, so a request carrying a valid
// token and another credential was accepted.
func TestSingleBearerToken(t *testing.T) {
	const token = "abc.def.ghi"
	cases := []struct {
		name   string
		values []string
		want   string // the token, or the error reason after "!"
	}{
		{"one value", []string{"Bearer " + token}, token},
		{"one value, scheme in another case", []string{"bearer " + token}, token},
		{"no value", nil, "!missing authorization"},
		{"empty list", []string{}, "!missing authorization"},
		{"one empty value", []string{""}, "!missing authorization"},
		{"one value, not Bearer", []string{"Basic dXNlcjpwYXNz"}, "!not a Bearer token"},
		{"two values, valid first", []string{"Bearer " + token, "Bearer other"}, "!more than one authorization value"},
		{"two values, valid second", []string{"Basic dXNlcjpwYXNz", "Bearer " + token}, "!more than one authorization value"},
		{"two equal values", []string{"Bearer " + token, "Bearer " + token}, "!more than one authorization value"},
		{"one value and an empty one", []string{"Bearer " + token, ""}, "!more than one authorization value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := security.SingleBearerToken(tc.values)
			reason, wantErr := strings.CutPrefix(tc.want, "!")
			if !wantErr {
				if err != nil || got != tc.want {
					t.Fatalf("SingleBearerToken(%q) = %q, %v; want %q", tc.values, got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, domain.ErrUnauthenticated) || !strings.Contains(err.Error(), reason) {
				t.Fatalf("SingleBearerToken(%q) = %q, %v; want an unauthenticated error containing %q", tc.values, got, err, reason)
			}
			if got != "" {
				t.Errorf("SingleBearerToken(%q) returned the token %q with its error", tc.values, got)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("SingleBearerToken(%q) error %q repeats the token", tc.values, err)
			}
		})
	}
}
