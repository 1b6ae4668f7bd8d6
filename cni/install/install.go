// Package install puts trellis-cni into a node's CNI setup: it copies the
// plugin binary into the CNI bin dir and appends the plugin to the
// primary conflist in the CNI conf dir (the file the runtime uses), and
// keeps it there while other CNI agents rewrite that file.
package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// PluginType is the "type" of our conflist entry (and the binary's name).
const PluginType = "trellis-cni"

// Installer holds where things go. Entry is our conflist entry without
// cniVersion/name (taken from the list); it must set "type".
type Installer struct {
	BinSrc  string // the binary to install (os.Executable)
	BinDir  string // e.g. /host/opt/cni/bin
	ConfDir string // e.g. /host/etc/cni/net.d
	Entry   map[string]any
	Log     *slog.Logger
}

// DefaultEntry is our conflist entry for the given settings.
func DefaultEntry(proxyUID uint32, inbound, outbound uint16, skipIn, skipOut, ipv6 string) map[string]any {
	e := map[string]any{
		"type": PluginType,
		// Makes containerd and CRI-O pass the pod's annotations, which is
		// how the plugin tells meshed pods without an API call.
		"capabilities":      map[string]any{"io.kubernetes.cri.pod-annotations": true},
		"proxyUID":          proxyUID,
		"inboundPort":       inbound,
		"outboundPort":      outbound,
		"skipInboundPorts":  skipIn,
		"skipOutboundPorts": skipOut,
		"ipv6":              ipv6,
	}
	return e
}

// InstallBinary copies BinSrc to BinDir/trellis-cni atomically (a
// running plugin keeps its old inode), unless it is already identical.
func (i *Installer) InstallBinary() (changed bool, err error) {
	src, err := os.ReadFile(i.BinSrc)
	if err != nil {
		return false, fmt.Errorf("reading plugin binary: %w", err)
	}
	dst := filepath.Join(i.BinDir, PluginType)
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, src) {
		return false, nil
	}
	if err := writeAtomic(dst, src, 0o755); err != nil {
		return false, fmt.Errorf("installing plugin binary: %w", err)
	}
	return true, nil
}

// PrimaryConf returns the file the runtime uses: the lexicographically
// first .conflist, .conf or .json file in ConfDir (libcni's order). It
// returns "" when there is none yet (the pod network is not installed).
func (i *Installer) PrimaryConf() (string, error) {
	ents, err := os.ReadDir(i.ConfDir)
	if err != nil {
		return "", fmt.Errorf("reading CNI conf dir: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "", nil
	}
	return filepath.Join(i.ConfDir, names[0]), nil
}

// Reconcile makes the primary conf end with exactly one, current, entry
// of ours. A single-plugin .conf/.json is turned into a .conflist next to
// it (the runtime only chains lists). It returns the file it wrote, or ""
// when nothing needed changing or there is no conf yet.
func (i *Installer) Reconcile() (string, error) {
	path, err := i.PrimaryConf()
	if err != nil || path == "" {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	updated, err := InsertEntry(data, i.Entry)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	target := path
	if filepath.Ext(path) != ".conflist" {
		target = strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	}
	if target == path && bytes.Equal(updated, data) {
		return "", nil
	}
	if err := writeAtomic(target, updated, 0o644); err != nil {
		return "", err
	}
	if target != path {
		if err := os.Remove(path); err != nil {
			return "", fmt.Errorf("removing %s after converting it to %s: %w", path, target, err)
		}
	}
	return target, nil
}

// InsertEntry returns the conf (a conflist or a single plugin conf) as a
// conflist whose plugins end with entry, replacing any entry of ours.
// Output is indented JSON; unchanged input gives byte-identical output.
func InsertEntry(data []byte, entry map[string]any) ([]byte, error) {
	list, err := toList(data)
	if err != nil {
		return nil, err
	}
	plugins, _ := list["plugins"].([]any)
	kept := plugins[:0:0]
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == PluginType {
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == 0 {
		return nil, errors.New("conflist has no plugin to chain after")
	}
	// Round-trip our entry through JSON so numbers compare like parsed ones.
	var e map[string]any
	b, err := json.Marshal(entry)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	list["plugins"] = append(kept, e)
	return marshal(list)
}

// RemoveEntry returns the conflist without our entries; changed is false
// when there was none.
func RemoveEntry(data []byte) (out []byte, changed bool, err error) {
	list, err := toList(data)
	if err != nil {
		return nil, false, err
	}
	plugins, _ := list["plugins"].([]any)
	kept := plugins[:0:0]
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == PluginType {
			changed = true
			continue
		}
		kept = append(kept, p)
	}
	if !changed {
		return data, false, nil
	}
	list["plugins"] = kept
	out, err = marshal(list)
	return out, true, err
}

// toList parses a conflist, or wraps a single plugin conf into one.
func toList(data []byte) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("parsing CNI configuration: %w", err)
	}
	if m == nil {
		return nil, errors.New("CNI configuration is not a JSON object")
	}
	if raw, ok := m["plugins"]; ok {
		plugins, ok := raw.([]any)
		if !ok {
			return nil, errors.New(`CNI configuration: "plugins" is not a list`)
		}
		for n, p := range plugins {
			if pm, ok := p.(map[string]any); !ok {
				return nil, fmt.Errorf("CNI configuration: plugin %d is not an object", n)
			} else if _, ok := pm["type"].(string); !ok {
				return nil, fmt.Errorf(`CNI configuration: plugin %d has no "type"`, n)
			}
		}
		return m, nil
	}
	if _, ok := m["type"].(string); !ok {
		return nil, errors.New(`CNI configuration has neither "plugins" nor "type"`)
	}
	list := map[string]any{"cniVersion": m["cniVersion"], "name": m["name"]}
	plugin := map[string]any{}
	for k, v := range m {
		if k != "cniVersion" && k != "name" {
			plugin[k] = v
		}
	}
	list["plugins"] = []any{plugin}
	return list, nil
}

func marshal(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Uninstall removes our entry from every conf in ConfDir and the binary.
func (i *Installer) Uninstall() error {
	ents, err := os.ReadDir(i.ConfDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading CNI conf dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if e.IsDir() || filepath.Ext(e.Name()) != ".conflist" {
			continue
		}
		path := filepath.Join(i.ConfDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, changed, err := RemoveEntry(data)
		if err != nil || !changed {
			continue // not ours to judge
		}
		if err := writeAtomic(path, out, 0o644); err != nil {
			errs = append(errs, err)
			continue
		}
		i.logger().Info("removed trellis-cni from CNI configuration", "file", path)
	}
	if err := os.Remove(filepath.Join(i.BinDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing plugin binary: %w", err))
	}
	return errors.Join(errs...)
}

// ErrNotInstalled is wrapped by Check when the plugin is not (fully) in
// place.
var ErrNotInstalled = errors.New("trellis-cni is not installed")

// Check reports whether the plugin is in place, as the installer's
// readiness probe: the binary in BinDir is BinSrc's, and the primary conf
// is a conflist that ends with exactly one, current, entry of ours.
func (i *Installer) Check() error {
	src, err := os.ReadFile(i.BinSrc)
	if err != nil {
		return fmt.Errorf("reading plugin binary: %w", err)
	}
	dst := filepath.Join(i.BinDir, PluginType)
	cur, err := os.ReadFile(dst)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: no %s", ErrNotInstalled, dst)
	case err != nil:
		return fmt.Errorf("reading %s: %w", dst, err)
	case !bytes.Equal(cur, src):
		return fmt.Errorf("%w: %s is not this version's binary", ErrNotInstalled, dst)
	}
	path, err := i.PrimaryConf()
	if err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("%w: no CNI configuration in %s yet (is the pod network installed?)", ErrNotInstalled, i.ConfDir)
	}
	if filepath.Ext(path) != ".conflist" {
		return fmt.Errorf("%w: the primary configuration %s is not a conflist", ErrNotInstalled, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	want, err := InsertEntry(data, i.Entry)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// InsertEntry is byte-stable on its own output: any difference means
	// our entry is missing, stale, duplicated or not last.
	if !bytes.Equal(want, data) {
		return fmt.Errorf("%w: %s does not end with the current trellis-cni entry", ErrNotInstalled, path)
	}
	return nil
}

// Install does one pass: binary, then conf.
func (i *Installer) Install() error {
	changed, err := i.InstallBinary()
	if err != nil {
		return err
	}
	if changed {
		i.logger().Info("installed plugin binary", "dir", i.BinDir)
	}
	file, err := i.Reconcile()
	if err != nil {
		return err
	}
	if file != "" {
		i.logger().Info("added trellis-cni to CNI configuration", "file", file)
	}
	return nil
}

// Watch installs, then reinstalls whenever the conf dir changes (another
// agent rewrote the conflist, or the pod network was installed after us),
// until ctx ends. Bursts of events are coalesced.
func (i *Installer) Watch(ctx context.Context, settle time.Duration) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching CNI conf dir: %w", err)
	}
	defer w.Close()
	if err := w.Add(i.ConfDir); err != nil {
		return fmt.Errorf("watching %s: %w", i.ConfDir, err)
	}
	if err := i.Install(); err != nil {
		return err
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("conf dir watcher closed")
			}
			i.logger().Debug("conf dir changed", "event", ev.String())
			timer.Reset(settle)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("conf dir watcher closed")
			}
			i.logger().Warn("watching conf dir", "err", err)
			timer.Reset(settle)
		case <-timer.C:
			// Our own write triggers one more event, and one more no-op pass.
			if err := i.Install(); err != nil {
				i.logger().Error("reinstalling trellis-cni", "err", err)
			}
		}
	}
}

func (i *Installer) logger() *slog.Logger {
	if i.Log != nil {
		return i.Log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// writeAtomic writes via a temp file in the same dir and renames it over
// path, so readers never see a half-written file. The temp name starts
// with a dot so PrimaryConf ignores it.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
