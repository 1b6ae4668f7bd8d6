package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/filewatch"
)

// PollInterval is the fallback re-read period, for file systems where
// change events are missing (network mounts, some container volumes).
const PollInterval = 2 * time.Second

// Store holds the current Config loaded from a file and reloads it on
// change. A bad edit is refused: the last good Config keeps serving.
type Store struct {
	path     string
	log      *slog.Logger
	onReload func(err error)

	mu       sync.Mutex
	cur      *Config
	changed  chan struct{}
	lastData []byte // the last bytes read, good or bad, to skip unchanged re-reads
	curData  []byte // the bytes cur was parsed from
}

// Options configure a Store.
type Options struct {
	Logger *slog.Logger
	// OnReload is called after every attempt to load a changed file, with
	// nil on success (for metrics).
	OnReload func(err error)
}

// Open loads the file at path. A missing or invalid file is an error: the
// controller must not start without a mesh description.
func Open(path string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store file %s: %w", path, err)
	}
	s := &Store{path: abs, log: opts.Logger, onReload: opts.OnReload, changed: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.onReload == nil {
		s.onReload = func(error) {}
	}
	data, err := readFile(abs)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("store file %s: %w", abs, err)
	}
	s.cur, s.lastData, s.curData = c, data, data
	return s, nil
}

// Path is the absolute path of the watched file.
func (s *Store) Path() string { return s.path }

// Current returns the current Config and a channel closed when it is
// replaced. Subscribers wait on the channel, then call Current again; no
// goroutine or buffer is kept per subscriber, so a slow one costs nothing.
func (s *Store) Current() (*Config, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.changed
}

// Reload re-reads the file. It returns nil when the file is unchanged or
// was loaded; on error the previous Config stays current.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := readFile(s.path)
	if err != nil {
		// A file briefly missing during an editor's rename dance is normal;
		// report it only if it persists to the next attempt.
		if errors.Is(err, os.ErrNotExist) && s.lastData != nil {
			s.lastData = nil
			return nil
		}
		s.lastData = nil
		s.log.Error("store file unreadable; keeping the last good configuration", "path", s.path, "err", err)
		s.onReload(err)
		return err
	}
	if s.lastData != nil && bytes.Equal(data, s.lastData) {
		return nil
	}
	s.lastData = data
	if bytes.Equal(data, s.curData) {
		// Back to the content being served (e.g. a bad edit was undone).
		return nil
	}
	c, err := Parse(data)
	if err == nil && c.TrustDomain != s.cur.TrustDomain {
		err = fmt.Errorf("trustDomain changed from %q to %q: the trust domain cannot change while the controller runs; restart it", s.cur.TrustDomain, c.TrustDomain)
	}
	if err != nil {
		s.log.Error("store file rejected; keeping the last good configuration", "path", s.path, "err", err)
		s.onReload(err)
		return err
	}
	s.cur, s.curData = c, data
	close(s.changed)
	s.changed = make(chan struct{})
	s.log.Info("store file reloaded", "path", s.path, "services", len(c.Services), "workloads", len(c.Workloads))
	s.onReload(nil)
	return nil
}

// Run watches the file until ctx is done. It watches the parent directory,
// so editors that write a new file and rename it over the old one, and
// atomic symlink swaps, are seen; a slow poll covers missed events.
func (s *Store) Run(ctx context.Context) error {
	w := filewatch.Start(ctx, filewatch.Options{
		Dir:    filepath.Dir(s.path),
		Names:  []string{filepath.Base(s.path)},
		Poll:   PollInterval,
		Logger: s.log.With("path", s.path),
		What:   "the store file",
	})
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.C():
			_ = s.Reload()
		}
	}
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("store file %s: %w", path, err)
	}
	return data, nil
}
