package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// MaxLogValueBytes bounds every string (and error) value a log line
// carries. Ids, types, messages and errors often come from outside (an
// engine, a broker, a handler quoting its input), and a log line must not
// grow with them: without a bound, a few hostile requests can fill a disk.
const MaxLogValueBytes = 1024

// NewLogger returns a JSON (or, with text set, logfmt-like text) logger
// writing to w at level, whose every string and error value is clipped to
// MaxLogValueBytes (see domain.Clip).
func NewLogger(w io.Writer, level slog.Leveler, text bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: ClipAttr}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ClipAttr is a slog.HandlerOptions.ReplaceAttr that clips string and
// error values to MaxLogValueBytes. Errors are logged as their text.
func ClipAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); len(s) > MaxLogValueBytes {
			a.Value = slog.StringValue(domain.Clip(s, MaxLogValueBytes))
		}
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			a.Value = slog.StringValue(domain.Clip(v.Error(), MaxLogValueBytes))
		case fmt.Stringer:
			if s := v.String(); len(s) > MaxLogValueBytes {
				a.Value = slog.StringValue(domain.Clip(s, MaxLogValueBytes))
			}
		}
	}
	return a
}

// Throttle limits how often lines about one kind of event are written: at
// most burst lines per interval for each key, the rest dropped and counted,
// the count reported with the next line written. Repeated refusals of a
// flooding peer then cost a few lines, not one per request. Keys are chosen
// by the code (never taken from input), so they are few. Safe for
// concurrent use.
type Throttle struct {
	interval time.Duration
	burst    int
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*throttleWindow
}

type throttleWindow struct {
	start   time.Time
	written int
	dropped int
}

// Default limits of refusal log lines: ten lines per key every ten seconds.
const (
	DefaultThrottleInterval = 10 * time.Second
	DefaultThrottleBurst    = 10
)

// NewThrottle returns a Throttle letting burst lines per key through in
// each interval; zero values take the defaults above.
func NewThrottle(interval time.Duration, burst int) *Throttle {
	if interval <= 0 {
		interval = DefaultThrottleInterval
	}
	if burst <= 0 {
		burst = DefaultThrottleBurst
	}
	return &Throttle{interval: interval, burst: burst, now: time.Now, keys: make(map[string]*throttleWindow)}
}

// Allow reports whether a line for key may be written now and, when it
// may, how many lines for key were dropped since the last one written.
func (t *Throttle) Allow(key string) (allowed bool, dropped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	w := t.keys[key]
	if w == nil {
		w = &throttleWindow{start: now}
		t.keys[key] = w
	}
	if now.Sub(w.start) >= t.interval {
		w.start, w.written = now, 0
	}
	if w.written >= t.burst {
		w.dropped++
		return false, 0
	}
	w.written++
	dropped, w.dropped = w.dropped, 0
	return true, dropped
}

// Log writes msg at level through log when the throttle allows a line for
// key, adding the number of similar lines dropped before it.
func (t *Throttle) Log(log *slog.Logger, level slog.Level, key, msg string, attrs ...slog.Attr) {
	allowed, dropped := t.Allow(key)
	if !allowed {
		return
	}
	if dropped > 0 {
		attrs = append(attrs, slog.Int("similar_lines_dropped", dropped))
	}
	log.LogAttrs(context.Background(), level, msg, attrs...)
}
