package examples

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gamelan-go/executor/pkg/executor"
	"github.com/gamelan-go/executor/pkg/executor/executortest"
)

func TestNotificationSenderSends(t *testing.T) {
	h := executortest.New(t, NotificationSender{})
	out := executortest.RequireCompleted(t, h.Run(map[string]any{
		"recipient": "ops@example.com",
		"message":   "order ORDER-1 shipped",
	}))
	assert.Equal(t, map[string]any{"sent": true, "recipient": "ops@example.com"}, out)
}

func TestNotificationSenderRejectsBadInput(t *testing.T) {
	h := executortest.New(t, NotificationSender{})
	tests := []struct {
		name        string
		vars        map[string]any
		wantMessage string
	}{
		{"no variables", map[string]any{}, `"recipient" is missing`},
		{"missing message", map[string]any{"recipient": "a@example.com"}, `"message" is missing`},
		{"missing recipient", map[string]any{"message": "hi"}, `"recipient" is missing`},
		{"empty recipient", map[string]any{"recipient": "", "message": "hi"}, `"recipient" is empty`},
		{"blank message", map[string]any{"recipient": "a@example.com", "message": "  "}, `"message" is empty`},
		{"numeric recipient", map[string]any{"recipient": 42.0, "message": "hi"}, `"recipient" is not a string`},
		{"object message", map[string]any{"recipient": "a@example.com", "message": map[string]any{}}, `"message" is not a string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := executortest.RequireFailed(t, h.Run(tt.vars), executor.CodeInvalidInput)
			assert.Contains(t, info.Message, tt.wantMessage)
		})
	}
}
