package porttest

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
)

// maxNameInID bounds the part of an id taken from the test name, leaving
// room for the random suffix and for suffixes the suites add, within the 255
// characters the engine accepts (domain.ValidID).
const maxNameInID = 160

// UniqueID returns an id that is unique to this call and readable in logs:
// the test's name with every character outside [a-zA-Z0-9_-] replaced by
// '-', then a random suffix. It is a valid domain id, so it serves as a run
// id, an executor id, or the stem of topic and group names, and a rerun
// (go test -count=3) against the same broker never meets an earlier run's
// records.
func UniqueID(t testing.TB) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > maxNameInID {
		name = name[len(name)-maxNameInID:] // the end of a subtest name is its most specific part
	}
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("porttest: random id suffix: %v", err)
	}
	return name + "-" + hex.EncodeToString(suffix[:])
}
