package restengine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// TaskPost is a task as Gamelan's REST dispatcher posts it to an executor's
// REST intake: its identity in headers, and optionally a JSON body.
type TaskPost struct {
	// ExecutorID, RunID, NodeID, IdempotencyKey and Signature are sent as
	// X-Executor-Id, X-Run-Id, X-Node-Id, X-Idempotency-Key and X-Signature
	// when not empty.
	ExecutorID, RunID, NodeID, IdempotencyKey, Signature string
	// Attempt is sent as X-Attempt.
	Attempt int
	// Token, when not empty, is sent as "Authorization: Bearer <Token>".
	Token string
	// Body is sent as the JSON body; nil sends none.
	Body []byte
	// Header is applied last: each of its keys replaces the header of that
	// name, and a key with no values removes it (a missing X-Attempt, a
	// malformed one).
	Header http.Header
}

// Request builds the POST of p to endpoint, the intake's URL as registered.
func (p TaskPost) Request(ctx context.Context, endpoint string) (*http.Request, error) {
	var body io.Reader
	if p.Body != nil {
		body = bytes.NewReader(p.Body)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return nil, fmt.Errorf("restengine: post task to %s: %w", endpoint, err)
	}
	set := func(key, value string) {
		if value != "" {
			req.Header.Set(key, value)
		}
	}
	set("X-Executor-Id", p.ExecutorID)
	set("X-Run-Id", p.RunID)
	set("X-Node-Id", p.NodeID)
	set("X-Attempt", strconv.Itoa(p.Attempt))
	set("X-Idempotency-Key", p.IdempotencyKey)
	set("X-Signature", p.Signature)
	if p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.Token)
	}
	if p.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for key, values := range p.Header {
		req.Header.Del(key)
		for _, v := range values {
			req.Header.Add(key, v)
		}
	}
	return req, nil
}

// Answer is the intake's answer to a posted task.
type Answer struct {
	Status int
	Body   string
	Header http.Header
}

// PostTask posts p to endpoint with client (http.DefaultClient when nil) and
// returns the answer, whatever its status; an error means no answer came.
func PostTask(ctx context.Context, client *http.Client, endpoint string, p TaskPost) (Answer, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := p.Request(ctx, endpoint)
	if err != nil {
		return Answer{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("restengine: post task %s:%s:%d: %w", p.RunID, p.NodeID, p.Attempt, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Answer{}, fmt.Errorf("restengine: post task %s:%s:%d: read answer: %w", p.RunID, p.NodeID, p.Attempt, err)
	}
	return Answer{Status: resp.StatusCode, Body: string(body), Header: resp.Header}, nil
}
