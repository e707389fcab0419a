package domain

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "calculate-tax", "order_validator", "ABC-123_x", strings.Repeat("x", 255)} {
		assert.True(t, ValidID(id), "%q", id)
	}
	for _, id := range []string{"", strings.Repeat("x", 256), "has space", "dot.ted", "slash/ed", "colon:ed", "ünicode", "tab\t", "new\nline"} {
		assert.False(t, ValidID(id), "%q", id)
	}
}

// ValidID is the engine's regular expression written as a loop: for every
// byte, alone and around valid ids, both agree.
func TestValidIDAgreesWithTheEnginesPattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[a-zA-Z0-9_-]{1,255}$`)
	for b := range 256 {
		c := string([]byte{byte(b)})
		for _, id := range []string{c, "a" + c, c + "a", "run-1" + c + "x", strings.Repeat("x", 254) + c, strings.Repeat("x", 255) + c} {
			assert.Equal(t, pattern.MatchString(id), ValidID(id), "%q", id)
		}
	}
}

func TestDescriptorWithDefaultsFillsOnlyZeroFields(t *testing.T) {
	got := Descriptor{Type: "calculate-tax"}.WithDefaults()
	assert.Equal(t, Descriptor{
		Type:               "calculate-tax",
		CommunicationType:  CommunicationGRPC,
		MaxConcurrentTasks: DefaultMaxConcurrentTasks,
		Version:            DefaultExecutorVersion,
	}, got)

	set := Descriptor{
		Type:               "payment-processor",
		CommunicationType:  CommunicationKafka,
		MaxConcurrentTasks: 3,
		SupportedNodeTypes: []string{"pay"},
		Version:            "2.1.0",
	}
	assert.Equal(t, set, set.WithDefaults())
}

func TestDescriptorValidate(t *testing.T) {
	valid := Descriptor{Type: "calculate-tax"}.WithDefaults()
	tests := []struct {
		name    string
		modify  func(*Descriptor)
		wantErr string
	}{
		{"valid", func(*Descriptor) {}, ""},
		{"kafka", func(d *Descriptor) { d.CommunicationType = CommunicationKafka }, ""},
		{"rest", func(d *Descriptor) { d.CommunicationType = CommunicationREST }, ""},
		{"empty type", func(d *Descriptor) { d.Type = "" }, `executor type "": must be 1-255`},
		{"type with a space", func(d *Descriptor) { d.Type = "calculate tax" }, `executor type "calculate tax"`},
		{"unknown communication type", func(d *Descriptor) { d.CommunicationType = "grpc" }, `communication type "grpc" is not a name such as GRPC, KAFKA or REST`},
		{"no communication type", func(d *Descriptor) { d.CommunicationType = "" }, `communication type ""`},
		{"zero concurrency", func(d *Descriptor) { d.MaxConcurrentTasks = 0 }, "max concurrent tasks 0 is below 1"},
		{"negative concurrency", func(d *Descriptor) { d.MaxConcurrentTasks = -4 }, "max concurrent tasks -4 is below 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := valid
			tt.modify(&d)
			err := d.Validate()
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestDescriptorSupports(t *testing.T) {
	d := Descriptor{Type: "calculate-tax", SupportedNodeTypes: []string{"tax", "vat"}}
	assert.True(t, d.Supports("calculate-tax"), "its own type")
	assert.True(t, d.Supports("tax"))
	assert.True(t, d.Supports("vat"))
	assert.False(t, d.Supports(""), "the empty node type matches nothing")
	assert.False(t, d.Supports("payment-processor"))
	assert.False(t, d.Supports("TAX"), "node types are case-sensitive")

	assert.False(t, Descriptor{SupportedNodeTypes: []string{""}}.Supports(""), "not even an empty entry")
}
