package ports

import "context"

// StopWithin stops the server of a push source (gRPC, HTTP) in its Close:
// it calls graceful, which lets calls in progress finish, and if that has
// not returned when ctx ends, calls hard, which cuts them short and must
// make graceful return promptly (a call blocked on a slow client must not
// hold the process). It returns once graceful has returned, with ctx's
// cause if the stop had to be hard.
func StopWithin(ctx context.Context, graceful, hard func()) error {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		graceful()
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		hard()
		<-stopped
		return context.Cause(ctx)
	}
}
