package rest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A body of JSON null is not a JSON object, and is refused like any other
// (docs/protocol.md 5.2). It used to decode as an empty object, and the
// task was accepted without variables.
func TestIntakeRefusesANullBody(t *testing.T) {
	intake, offers := startedIntake(t, IntakeConfig{}, 4)
	for _, body := range []string{"null", " null\n"} {
		p := headersOnly("run-1", "n")
		p.Body = []byte(body)
		message := requireAnswer(t, http.StatusBadRequest, post(t, intake, p), body)
		assert.Contains(t, message, "not a JSON object")
	}
	assert.Empty(t, offers.Offers(), "a null body was accepted: %s", offers)
}
