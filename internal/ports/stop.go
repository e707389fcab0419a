package ports

import "time"

// StopWithin stops the server of a push source (gRPC, HTTP) in its Close:
// it calls graceful, which lets calls in progress finish, and if that has
// not returned within timeout, calls hard, which cuts them short and must
// make graceful return promptly (a call blocked on a slow client must not
// hold the process). It returns once graceful has returned.
func StopWithin(timeout time.Duration, graceful, hard func()) {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		graceful()
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		hard()
		<-stopped
	}
}
