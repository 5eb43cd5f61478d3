package store_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// sweepRecorder is a store whose SweepSessions reports each call and
// answers with removed and err.
type sweepRecorder struct {
	store.Store
	calls   chan time.Time
	removed int
	err     error
}

func (s *sweepRecorder) SweepSessions(_ context.Context, now time.Time) (int, error) {
	s.calls <- now
	return s.removed, s.err
}

// sweepThrice runs SweepSessionsEvery on st until its third call to
// SweepSessions (by then the first two were logged), then ends its context
// and waits for it to return.
func sweepThrice(st *sweepRecorder, log func() *zap.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		store.SweepSessionsEvery(ctx, st, time.Millisecond, log)
		close(done)
	}()
	for range 3 {
		<-st.calls
	}
	cancel()
	// A call under way when ctx ended still needs its answer.
	for {
		select {
		case <-st.calls:
			continue
		case <-done:
		}
		break
	}
}

// TestSweepSessionsEvery: the sweeper calls SweepSessions again and again,
// logs what it removed or what failed, and returns once its context ends.
func TestSweepSessionsEvery(t *testing.T) {
	for _, tc := range []struct {
		name    string
		removed int
		err     error
		level   zapcore.Level
		msg     string // "": nothing logged
	}{
		{"removed some", 3, nil, zapcore.InfoLevel, "expired sessions removed"},
		{"removed none", 0, nil, zapcore.InfoLevel, ""},
		{"failed", 0, errors.New("store down"), zapcore.ErrorLevel, "removing expired sessions failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			st := &sweepRecorder{calls: make(chan time.Time), removed: tc.removed, err: tc.err}
			sweepThrice(st, func() *zap.Logger { return zap.New(core) })
			got := logs.All()
			if tc.msg == "" {
				if len(got) != 0 {
					t.Fatalf("logged %v, want nothing", got)
				}
				return
			}
			if len(got) < 2 {
				t.Fatalf("logged %d entries, want one per sweep, at least 2", len(got))
			}
			for _, e := range got {
				if e.Message != tc.msg || e.Level != tc.level {
					t.Errorf("logged %s %q, want %s %q", e.Level, e.Message, tc.level, tc.msg)
				}
			}
			if tc.removed > 0 && got[0].ContextMap()["sessions"] != int64(tc.removed) {
				t.Errorf("fields %v, want sessions=%d", got[0].ContextMap(), tc.removed)
			}
		})
	}
}

// TestSweepSessionsEveryCurrentLogger: each sweep logs on the logger of
// that moment, not the one of the sweeper's start, since a reload swaps
// the logger while the shared store (and its sweeper) lives on. The
// logger here changes after its first use.
func TestSweepSessionsEveryCurrentLogger(t *testing.T) {
	first, firstLogs := observer.New(zapcore.DebugLevel)
	second, secondLogs := observer.New(zapcore.DebugLevel)
	var asked atomic.Int32
	logger := func() *zap.Logger {
		if asked.Add(1) == 1 {
			return zap.New(first)
		}
		return zap.New(second)
	}
	st := &sweepRecorder{calls: make(chan time.Time), removed: 1}
	sweepThrice(st, logger)
	if firstLogs.Len() != 1 || secondLogs.Len() < 1 {
		t.Errorf("entries on the first logger %d, on the second %d: want 1 and at least 1 (one logger per entry, asked each time)",
			firstLogs.Len(), secondLogs.Len())
	}
}
