package domain

import (
	"strconv"
	"unicode/utf8"
)

// QuoteBytes is how much of a value from outside Quote keeps.
const QuoteBytes = 64

// Quote returns s as a Go-quoted string for an error or log message, clipped
// to QuoteBytes bytes: values from outside (ids, types, keys) may be of any
// size, and a message must not grow with them.
func Quote(s string) string { return strconv.Quote(Clip(s, QuoteBytes)) }

// Clip returns s itself when it is at most max bytes long, else its first
// max bytes (cut back to a UTF-8 boundary) followed by a short note of how
// many bytes were dropped. Invalid UTF-8 is
// kept as it is (quote it to print it).
func Clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && cut > max-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)-cut) + " more bytes)"
}
