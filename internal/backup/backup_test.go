package backup

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/crudauth/caddy-crudauth/internal/store"
	"github.com/crudauth/caddy-crudauth/internal/store/bolt"
	"github.com/crudauth/caddy-crudauth/internal/store/memory"
)

// TestWriteFormats: each format gives its copy, or the error the admin API
// answers with 400; the byte count is what reached the writer.
func TestWriteFormats(t *testing.T) {
	ctx := context.Background()
	bs, err := bolt.Open(filepath.Join(t.TempDir(), "b.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ms := memory.Open("", memory.Options{})
	defer ms.Close()
	for _, tc := range []struct {
		name   string
		st     store.Store
		format string
		want   error
	}{
		{"export by default", ms, "", nil},
		{"export", ms, Export, nil},
		{"bolt file", bs, Bolt, nil},
		{"no file to snapshot", ms, Bolt, ErrNoFileSnapshot},
		{"unknown format", bs, "tar", ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := Write(ctx, tc.st, &buf, tc.format)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if n != int64(buf.Len()) || (tc.want == nil && n == 0) {
				t.Errorf("reported %d bytes, wrote %d", n, buf.Len())
			}
			if tc.want == nil && tc.format != Bolt {
				if _, err := store.ReadExport(&buf); err != nil {
					t.Errorf("the export does not read back: %v", err)
				}
			}
		})
	}
}
