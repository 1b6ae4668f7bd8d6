// Package filewatch tells a reloader when files of one directory may have
// changed. It watches the directory rather than the files, so files renamed
// into place (editors, atomic writers) and the `..data` symlink swap of
// Kubernetes Secret and ConfigMap volumes are seen; it debounces bursts of
// events, and it also ticks at a poll interval because some file systems
// (network mounts, some container volumes) lose events. Receivers re-read
// and compare: a notification means "look again", not "it changed".
package filewatch

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults of Options.
const (
	DefaultPoll = 2 * time.Second
	// DefaultDebounce lets a writer finish a burst of changes (several
	// files, or a write then a rename) before the receiver re-reads.
	DefaultDebounce = 100 * time.Millisecond
)

// Options say what to watch.
type Options struct {
	// Dir is the directory holding the files.
	Dir string
	// Names are the base names of the files of interest: events about
	// other names of Dir are ignored, except the names Kubernetes' atomic
	// writer uses (starting with ".."), whose swap replaces every file at
	// once. Empty: every name counts.
	Names []string
	// Poll is the period of the fallback notifications; 0 means
	// DefaultPoll.
	Poll time.Duration
	// Debounce is how long events must stop before a notification; 0
	// means DefaultDebounce.
	Debounce time.Duration
	// Logger receives the warnings of a watch that cannot be set up or
	// fails (polling goes on); nil discards them.
	Logger *slog.Logger
	// What names the files in log messages, e.g. "the store file".
	What string
}

// Watcher notifies on C after a burst of changes and at every poll tick.
type Watcher struct {
	c      chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// Start watches until ctx is done or Stop is called. The directory watch
// is in place when Start returns, so a change made afterwards is seen
// without waiting for a poll; if it cannot be set up, Start logs why and
// the watcher polls only.
func Start(ctx context.Context, o Options) *Watcher {
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.What == "" {
		o.What = "the files"
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{c: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}

	fw, err := fsnotify.NewWatcher()
	if err == nil {
		if err = fw.Add(o.Dir); err != nil {
			fw.Close()
		}
	}
	if err != nil {
		o.Logger.Warn("cannot watch "+o.What+" for changes; polling only", "dir", o.Dir, "interval", o.Poll, "err", err)
		fw = nil
	}
	go w.run(ctx, o, fw)
	return w
}

// C receives a value when the files should be read again. It holds at most
// one pending notification: a slow receiver gets one for many changes.
func (w *Watcher) C() <-chan struct{} { return w.c }

// Stop ends the watch and waits until it has released its resources.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

func (w *Watcher) run(ctx context.Context, o Options, fw *fsnotify.Watcher) {
	defer close(w.done)
	var events <-chan fsnotify.Event
	var errs <-chan error
	if fw != nil {
		defer fw.Close()
		events, errs = fw.Events, fw.Errors
	}
	poll := time.NewTicker(o.Poll)
	defer poll.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod || !o.concerns(ev.Name) {
				continue
			}
			debounce.Reset(o.Debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			o.Logger.Warn("watch error on "+o.What+"; polling continues", "dir", o.Dir, "err", err)
		case <-debounce.C:
			w.notify()
		case <-poll.C:
			w.notify()
		}
	}
}

func (w *Watcher) notify() {
	select {
	case w.c <- struct{}{}:
	default: // one is already pending
	}
}

// concerns reports whether an event about path (a name in Dir) may change
// one of the files.
func (o Options) concerns(path string) bool {
	name := filepath.Base(path)
	return len(o.Names) == 0 || slices.Contains(o.Names, name) || strings.HasPrefix(name, "..")
}
