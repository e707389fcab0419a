package resttest

import (
	"context"
	"net/http"

	"github.com/gamelan-go/executor/internal/engine/restengine"
)

// TaskPost is a task as Gamelan's REST dispatcher posts it to an executor's
// REST intake: its identity in headers, and optionally a JSON body.
type TaskPost = restengine.TaskPost

// Answer is the intake's answer to a posted task.
type Answer = restengine.Answer

// PostTask posts p to endpoint with client (http.DefaultClient when nil) and
// returns the answer, whatever its status; an error means no answer came.
func PostTask(ctx context.Context, client *http.Client, endpoint string, p TaskPost) (Answer, error) {
	return restengine.PostTask(ctx, client, endpoint, p)
}
