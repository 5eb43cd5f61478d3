// Package backup takes a consistent copy of a store, in the portable export
// or as a bolt store's file, and restores an export: the one implementation
// behind the admin API and the CLI on a file.
package backup

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/crudauth/caddy-crudauth/internal/store"
)

// Backup formats: the portable export (the default), and the bbolt file
// snapshot of a bolt store.
const (
	Export = "export"
	Bolt   = "bolt"
)

// MaxRestoreBytes caps an export sent to the admin API to restore.
const MaxRestoreBytes = 1 << 30

// The backup errors the caller can fix by asking differently; the admin API
// answers them with 400.
var (
	ErrFormat         = errors.New("unknown backup format")
	ErrNoFileSnapshot = errors.New("this store keeps no file to snapshot; back it up in the default format (export)")
)

// Write writes a consistent snapshot of st to w in format (empty for
// the export) and returns the number of bytes written.
func Write(ctx context.Context, st store.Store, w io.Writer, format string) (int64, error) {
	switch format {
	case "", Export:
		cw := &countingWriter{w: w}
		err := store.Export(ctx, st, cw)
		return cw.n, err
	case Bolt:
		fs, ok := st.(store.FileSnapshotter)
		if !ok {
			return 0, ErrNoFileSnapshot
		}
		return fs.SnapshotFile(ctx, w)
	default:
		return 0, fmt.Errorf("%w %q: use export or bolt", ErrFormat, format)
	}
}

// Restore imports an export into st (see store.ImportDump): all the
// users or none, and no secret or signing key that would replace another.
// A conflict wraps store.ErrExists, store.ErrSecretConflict or
// store.ErrKeyConflict.
func Restore(ctx context.Context, st store.Store, d *store.Dump) (store.ImportStats, error) {
	stats, err := store.ImportDump(ctx, st, d)
	if errors.Is(err, store.ErrExists) {
		return stats, fmt.Errorf("%w: restore into an empty store, or one that holds none of these users", err)
	}
	return stats, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
