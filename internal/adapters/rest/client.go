package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
)

// ClientConfig configures the client of the engine's REST registry.
type ClientConfig struct {
	// BaseURL is the engine's REST base, e.g. http://engine:8080. Required.
	BaseURL string
	// Timeout bounds each HTTP request (5s if 0).
	Timeout time.Duration
	// Attempts bounds the tries of an idempotent request (3 if 0).
	Attempts int
	// Backoff paces the retries.
	Backoff domain.Backoff
	// Token, when set, returns the bearer token for a call made on behalf
	// of an executor id.
	Token func(executorID string) (string, error)
	// Transport replaces the tuned default transport (tests, TLS).
	Transport http.RoundTripper
}

// maxErrorBody bounds how much of an error answer is quoted in an error.
const maxErrorBody = 512

// Client calls the engine's REST registry. Every request carries the bearer
// token, has a timeout, and idempotent requests are retried with jittered
// backoff on network errors, 5xx and 429. A non-2xx answer is an
// *StatusError quoting the status and the start of the body.
type Client struct {
	base     *url.URL
	http     *http.Client
	attempts int
	backoff  domain.Backoff
	token    func(string) (string, error)
}

// StatusError is a non-2xx answer. URL has its password redacted; Body is
// the start of the answer's body, at most 512 bytes.
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Body)
}

// NewClient validates cfg and returns a client.
func NewClient(cfg ClientConfig) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("engine client: base URL %q must be an absolute http or https URL", cfg.BaseURL)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Attempts == 0 {
		cfg.Attempts = 3
	}
	if cfg.Backoff == (domain.Backoff{}) {
		cfg.Backoff = domain.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.2}
	}
	transport := cfg.Transport
	if transport == nil {
		transport = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          16,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   cfg.Timeout,
			ResponseHeaderTimeout: cfg.Timeout,
			ForceAttemptHTTP2:     true,
		}
	}
	return &Client{
		base:     base,
		http:     &http.Client{Transport: transport, Timeout: cfg.Timeout},
		attempts: cfg.Attempts,
		backoff:  cfg.Backoff,
		token:    cfg.Token,
	}, nil
}

// do sends one request (retried when idempotent) and decodes a 2xx JSON
// answer into out when out is not nil.
func (c *Client) do(ctx context.Context, method, path, executorID string, body, out any) error {
	target := c.base.JoinPath(path)
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, target.Redacted(), err)
		}
	}
	var lastErr error
	for attempt := 0; attempt < c.attempts; attempt++ {
		if attempt > 0 {
			if err := c.backoff.Wait(ctx, attempt-1); err != nil {
				return fmt.Errorf("%w (after %d attempts: %v)", err, attempt, lastErr)
			}
		}
		retry, err := c.once(ctx, method, target, executorID, payload, out)
		if err == nil || !retry {
			return err
		}
		lastErr = err
	}
	return lastErr
}

// once sends one request; retry reports whether a failure may be retried.
// Errors show the URL with its password redacted (an ENGINE_URL may carry
// credentials).
func (c *Client) once(ctx context.Context, method string, target *url.URL, executorID string, payload []byte, out any) (retry bool, err error) {
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	shown := target.Redacted()
	req, err := http.NewRequestWithContext(ctx, method, target.String(), reader)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", method, shown, err)
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		token, err := c.token(executorID)
		if err != nil {
			return false, fmt.Errorf("%s %s: token: %w", method, shown, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return ctx.Err() == nil, fmt.Errorf("%s %s: %w", method, shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		quoted, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
		statusErr := &StatusError{Method: method, URL: shown, Status: resp.StatusCode, Body: strings.TrimSpace(string(quoted))}
		return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests, statusErr
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return false, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return false, fmt.Errorf("%s %s: decode answer: %w", method, shown, err)
	}
	return false, nil
}

// statusOf returns the HTTP status of a StatusError in err's chain, or 0.
func statusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}
