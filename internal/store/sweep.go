package store

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// SweepSessionsEvery removes expired sessions from st every interval until
// ctx ends, so that the sessions of users who never come back do not pile
// up (CreateSession removes only the user's own). It logs what it removed
// and what failed, not a failure that ctx's end caused, on the logger log
// returns at that moment: the sweep outlives config reloads, which may
// replace the logger (and close the old one's file).
func SweepSessionsEvery(ctx context.Context, st Store, interval time.Duration, log func() *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := st.SweepSessions(ctx, time.Now())
			switch {
			case err != nil && ctx.Err() == nil:
				log().Error("removing expired sessions failed", zap.Error(err))
			case n > 0:
				log().Info("expired sessions removed", zap.Int("sessions", n))
			}
		}
	}
}
