// Package clock holds the wait that the parts' loops share: sleep for a
// while unless the context ends first (backoff between retries, the bench
// harness's phases).
package clock

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx is done, and returns ctx.Err() in that case
// (nil when it slept d). It uses one timer, stopped on return, and no
// goroutine.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
