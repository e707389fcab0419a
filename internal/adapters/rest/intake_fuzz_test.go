package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gamelan-go/executor/internal/domain"
	"github.com/gamelan-go/executor/internal/security"
	"github.com/gamelan-go/executor/pkg/porttest"
)

// The fuzz target of the REST intake: whole requests, headers and body,
// through the intake's handler (httptest, in process: a listener would
// add nothing the handler sees, and cost most of each input's time).

// fuzzMaxBody is the body limit of the fuzzed intakes: small, so that the
// fuzzer reaches it.
const fuzzMaxBody = 4 << 10

// maxAnswerMessageBytes bounds an answer's message: it is sent to the
// engine and logged, and must not grow with the request.
const maxAnswerMessageBytes = 1024

// fuzzSecret and fuzzNow are the secret and the fixed clock of the intake
// with authentication on: the seed corpus holds tokens minted with them
// (see fuzzToken), valid at fuzzNow for ever.
var (
	fuzzSecret = []byte("fuzz-secret-of-at-least-32-bytes-0123456789")
	fuzzNow    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

// fuzzIntakes are the intakes of a fuzzing process: one open, one
// verifying tokens as the service does (newInbound).
type fuzzIntakes struct {
	open, secured *Intake
	verifier      *security.Verifier
}

func newFuzzIntakes(f *testing.F) *fuzzIntakes {
	verifier, err := security.NewVerifier(security.VerifierConfig{Secret: fuzzSecret, Issuer: "gamelan-engine",
		Audience: "gamelan-executor", Now: func() time.Time { return fuzzNow }})
	if err != nil {
		f.Fatal(err)
	}
	start := func(authenticate func(string) error) *Intake {
		in, err := NewIntake(IntakeConfig{Address: "127.0.0.1:0", MaxBodyBytes: fuzzMaxBody, Authenticate: authenticate,
			Executors: []domain.Registration{taxRegistration()}}, slog.New(slog.DiscardHandler))
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = in.Close(ctx)
		})
		return in
	}
	return &fuzzIntakes{
		open:     start(nil),
		secured:  start(func(token string) error { _, err := verifier.Verify(token); return err }),
		verifier: verifier,
	}
}

// FuzzIntakeRequest posts arbitrary tasks to the REST intake: the task
// headers, the Authorization header (to the intake verifying tokens when
// secured is set), and the body. Whatever the request:
//   - the answer is 202, 400, or 401 (401 only when secured, and exactly
//     when the token does not verify), as JSON saying whether the task was
//     accepted, with a non-empty message of bounded size;
//   - a refusal offers nothing, and names what is wrong where the intake
//     promises to (the headers X-Run-Id, X-Node-Id, X-Attempt,
//     X-Executor-Id; the body);
//   - an accepted task is offered once, is valid, carries the headers' ids
//     and the body's fields, and round-trips: posted again by the engine
//     side's encoder (restengine.TaskPost), it is the same task.
func FuzzIntakeRequest(f *testing.F) {
	f.Add("run-1", "node-1", "1", "", taxExecutorID, "", false, []byte(`{"amount":12.5}`))
	intakes := newFuzzIntakes(f)
	f.Fuzz(func(t *testing.T, runID, nodeID, attempt, idempotencyKey, executorID, authorization string, secured bool, body []byte) {
		intake := intakes.open
		if secured {
			intake = intakes.secured
		}
		headers := map[string]string{"X-Run-Id": runID, "X-Node-Id": nodeID, "X-Attempt": attempt,
			"X-Idempotency-Key": idempotencyKey, "X-Executor-Id": executorID, "Authorization": authorization}
		status, message, offers := serve(t, intake, headers, body)

		switch {
		case secured && status == http.StatusUnauthorized:
			token, err := security.BearerToken(authorization)
			if err == nil {
				_, err = intakes.verifier.Verify(token)
			}
			if err == nil {
				t.Fatalf("a token that verifies was refused: %s", message)
			}
			if !errors.Is(err, domain.ErrUnauthenticated) || message != err.Error() {
				t.Fatalf("401 with %q, not the verifier's reason %q", message, err)
			}
			if len(authorization) >= 16 && strings.Contains(message, authorization) {
				t.Fatalf("the 401 echoes the authorization header")
			}
		case secured:
			token, err := security.BearerToken(authorization)
			if err == nil {
				_, err = intakes.verifier.Verify(token)
			}
			if err != nil {
				t.Fatalf("answered %d to a request whose token does not verify (%v)", status, err)
			}
		}
		if status == http.StatusUnauthorized {
			if !secured {
				t.Fatalf("401 from an intake without authentication: %s", message)
			}
			requireNoOffer(t, offers, status)
			return
		}

		switch status {
		case http.StatusBadRequest:
			requireNoOffer(t, offers, status)
			requireNamed(t, message, headers, body)
		case http.StatusAccepted:
			if len(offers) != 1 {
				t.Fatalf("accepted, and offered %d times", len(offers))
			}
			task := offers[0].Task
			requireAccepted(t, task, headers, body)
			again := repost(t, intake, task, authorization)
			if !reflect.DeepEqual(task, again) {
				t.Fatalf("the task changed when the engine side posted it again:\nfirst:  %+v\nsecond: %+v", task, again)
			}
		default:
			t.Fatalf("answered %d: %s", status, message)
		}
	})
}

// serve posts one request to intake through its handler, with each header
// set exactly as given (values the HTTP parser would refuse included), and
// returns the status, the answer's message and the tasks offered.
func serve(t *testing.T, intake *Intake, headers map[string]string, body []byte) (int, string, []*porttest.Offered) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, TaskPath, bytes.NewReader(body))
	for k, v := range headers {
		if v != "" {
			req.Header[k] = []string{v}
		}
	}
	return serveRequest(t, intake, req)
}

func serveRequest(t *testing.T, intake *Intake, req *http.Request) (int, string, []*porttest.Offered) {
	t.Helper()
	offers := porttest.NewIntake(4)
	if err := intake.Start(context.Background(), offers); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	intake.ServeHTTP(w, req)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("answer of type %q", ct)
	}
	var answer struct {
		Accepted *bool   `json:"accepted"`
		Message  *string `json:"message"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil || answer.Accepted == nil || answer.Message == nil {
		t.Fatalf("answer %d is not {accepted, message}: %q (%v)", w.Code, w.Body.String(), err)
	}
	if *answer.Accepted != (w.Code == http.StatusAccepted) {
		t.Fatalf("answer %d says accepted: %v", w.Code, *answer.Accepted)
	}
	if *answer.Message == "" || len(*answer.Message) > maxAnswerMessageBytes {
		t.Fatalf("answer %d has a message of %d bytes: %.200q", w.Code, len(*answer.Message), *answer.Message)
	}
	return w.Code, *answer.Message, offers.Offers()
}

func requireNoOffer(t *testing.T, offers []*porttest.Offered, status int) {
	t.Helper()
	if len(offers) != 0 {
		t.Fatalf("answered %d, yet offered %+v", status, offers[0].Task)
	}
}

// requireNamed checks that a 400 names the first thing wrong, in the order
// the intake reads a request.
func requireNamed(t *testing.T, message string, headers map[string]string, body []byte) {
	t.Helper()
	want := ""
	attempt := strings.TrimSpace(headers["X-Attempt"])
	_, attemptErr := strconv.ParseInt(attempt, 10, 64)
	executorID := headers["X-Executor-Id"]
	switch {
	case headers["X-Run-Id"] == "" || headers["X-Node-Id"] == "":
		want = "X-Run-Id and X-Node-Id are required"
	case attempt == "" || attemptErr != nil:
		want = "X-Attempt"
	case executorID != "" && executorID != taxExecutorID && executorID != taxExecutorType:
		want = "X-Executor-Id"
	case len(body) > fuzzMaxBody:
		want = "body larger than"
	case len(bytes.TrimSpace(body)) > 0 && !strings.HasPrefix(message, "invalid task: "):
		want = "body"
	default:
		want = "invalid task: " // a rule of docs/protocol.md 3.1
	}
	if !strings.Contains(message, want) {
		t.Fatalf("400 %q does not name %q", message, want)
	}
}

// requireAccepted checks an accepted task against the request.
func requireAccepted(t *testing.T, task domain.Task, headers map[string]string, body []byte) {
	t.Helper()
	if err := task.Validate(); err != nil {
		t.Fatalf("accepted an invalid task: %v", err)
	}
	attempt, _ := strconv.ParseInt(strings.TrimSpace(headers["X-Attempt"]), 10, 64)
	if task.RunID != headers["X-Run-Id"] || task.NodeID != headers["X-Node-Id"] || int64(task.Attempt) != attempt ||
		task.IdempotencyKey != headers["X-Idempotency-Key"] {
		t.Fatalf("the task's identity is not the headers': %+v", task)
	}
	if task.ExecutorID != "" && task.ExecutorID != taxExecutorID {
		t.Fatalf("routed to %q, which is not hosted here", task.ExecutorID)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if task.Context == nil || len(task.Context) != 0 {
			t.Fatalf("a task without a body has context %#v, not an empty one", task.Context)
		}
		return
	}
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		t.Fatalf("accepted a body that is not a JSON object (%v): %.200q", err, body)
	}
	want := fields
	if _, ok := fields["context"]; ok {
		want, _ = fields["context"].(map[string]any)
	}
	if !reflect.DeepEqual(task.Context, want) {
		t.Fatalf("context %#v, the body says %#v", task.Context, want)
	}
}

// repost posts task again as the engine side encodes it, headers and
// body, and returns the task offered.
func repost(t *testing.T, intake *Intake, task domain.Task, authorization string) domain.Task {
	t.Helper()
	post := taskPost(t, task, true)
	post.Header = http.Header{"Authorization": {authorization}}
	req, err := post.Request(context.Background(), "http://intake"+TaskPath)
	if err != nil {
		t.Fatal(err)
	}
	status, message, offers := serveRequest(t, intake, req)
	if status != http.StatusAccepted || len(offers) != 1 {
		t.Fatalf("the engine side's post of an accepted task was answered %d: %s", status, message)
	}
	return offers[0].Task
}
