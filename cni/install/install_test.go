package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const bridgeList = `{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}`
const bridgeConf = `{"cniVersion":"0.4.0","name":"k8s","type":"bridge","bridge":"cni0","ipam":{"type":"host-local"}}`

func entry() map[string]any { return DefaultEntry(2102, 4143, 4140, "4143,4191", "", "auto") }

func pluginTypes(t *testing.T, data []byte) []string {
	t.Helper()
	var l struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatalf("output is not a conflist: %v\n%s", err, data)
	}
	var out []string
	for _, p := range l.Plugins {
		s, _ := p["type"].(string)
		out = append(out, s)
	}
	return out
}

func TestInsertEntry(t *testing.T) {
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "conflist", in: bridgeList, want: "bridge,portmap,trellis-cni"},
		{name: "single conf", in: bridgeConf, want: "bridge,trellis-cni"},
		{name: "already present in the middle", in: `{"name":"k","plugins":[{"type":"bridge"},{"type":"trellis-cni","proxyUID":1},{"type":"portmap"}]}`,
			want: "bridge,portmap,trellis-cni"},
		{name: "not json", in: `{`, wantErr: "parsing"},
		{name: "plugins not a list", in: `{"plugins":{}}`, wantErr: "not a list"},
		{name: "neither", in: `{"name":"x"}`, wantErr: "neither"},
		{name: "only us", in: `{"plugins":[{"type":"trellis-cni"}]}`, wantErr: "no plugin to chain after"},
		{name: "null", in: `null`, wantErr: "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := InsertEntry([]byte(tt.in), entry())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InsertEntry = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(pluginTypes(t, out), ","); got != tt.want {
				t.Fatalf("plugins = %s, want %s", got, tt.want)
			}
			again, err := InsertEntry(out, entry())
			if err != nil || string(again) != string(out) {
				t.Fatalf("second insert changed the conf (err %v):\n%s\nthen:\n%s", err, out, again)
			}
			removed, changed, err := RemoveEntry(out)
			if err != nil || !changed || strings.Contains(string(removed), PluginType) {
				t.Fatalf("RemoveEntry = %s, %v, %v", removed, changed, err)
			}
		})
	}
}

func newInstaller(t *testing.T) *Installer {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "src-bin")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	in := &Installer{BinSrc: bin, BinDir: filepath.Join(dir, "bin"), ConfDir: filepath.Join(dir, "net.d"), Entry: entry()}
	for _, d := range []string{in.BinDir, in.ConfDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return in
}

func TestInstallUninstall(t *testing.T) {
	in := newInstaller(t)
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(in.ConfDir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// No conf yet: the binary goes in, the conf is left for later.
	if err := in.Install(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(in.BinDir, PluginType)); err != nil {
		t.Fatalf("binary not installed: %v", err)
	}
	write("10-bridge.conf", bridgeConf)
	write("99-other.conflist", bridgeList) // not primary: must stay untouched
	if err := in.Install(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(in.ConfDir, "10-bridge.conf")); !os.IsNotExist(err) {
		t.Fatalf("single conf not converted away: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(in.ConfDir, "10-bridge.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pluginTypes(t, data), ","); got != "bridge,trellis-cni" {
		t.Fatalf("plugins = %s", got)
	}
	if other, _ := os.ReadFile(filepath.Join(in.ConfDir, "99-other.conflist")); string(other) != bridgeList {
		t.Fatalf("non-primary conf changed: %s", other)
	}
	if file, err := in.Reconcile(); err != nil || file != "" {
		t.Fatalf("second Reconcile wrote %q (err %v), want no change", file, err)
	}

	if err := in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(in.ConfDir, "10-bridge.conflist"))
	if got := strings.Join(pluginTypes(t, data), ","); got != "bridge" {
		t.Fatalf("after uninstall plugins = %s", got)
	}
	if _, err := os.Stat(filepath.Join(in.BinDir, PluginType)); !os.IsNotExist(err) {
		t.Fatalf("binary still there after uninstall: %v", err)
	}
	if err := in.Uninstall(); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
}

func TestWatchReinstallsAfterRewrite(t *testing.T) {
	in := newInstaller(t)
	conf := filepath.Join(in.ConfDir, "10-k8s.conflist")
	if err := os.WriteFile(conf, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- in.Watch(ctx, 50*time.Millisecond) }()
	hasUs := func() bool {
		data, _ := os.ReadFile(conf)
		return strings.Contains(string(data), `"trellis-cni"`)
	}
	waitFor := func(what string) {
		t.Helper()
		for !hasUs() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case err := <-done:
				t.Fatalf("Watch returned early: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("the first install")
	// Another CNI agent rewrites its conflist without us.
	if err := os.WriteFile(conf, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("the reinstall after a rewrite")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch: %v", err)
	}
}

func FuzzInsertEntry(f *testing.F) {
	f.Add([]byte(bridgeList))
	f.Add([]byte(bridgeConf))
	f.Add([]byte(`{"plugins":[{"type":"trellis-cni"},{"type":"x"}]}`))
	f.Add([]byte(`{"plugins":[1,"a",null]}`))
	f.Add([]byte(`{"type":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := InsertEntry(data, entry())
		if err != nil {
			return
		}
		types := pluginTypes(t, out)
		if len(types) < 2 || types[len(types)-1] != PluginType {
			t.Fatalf("plugins %v: want ours last after at least one other", types)
		}
		for _, ty := range types[:len(types)-1] {
			if ty == PluginType {
				t.Fatalf("duplicate entry: %v", types)
			}
		}
		again, err := InsertEntry(out, entry())
		if err != nil || string(again) != string(out) {
			t.Fatalf("not idempotent: %v", err)
		}
	})
}

// TestCheck: the installer's probe passes only with the current binary
// and exactly one current entry at the end of the primary conflist.
func TestCheck(t *testing.T) {
	const ours = `{"type":"trellis-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"proxyUID":2102,"inboundPort":4143,"outboundPort":4140,"skipInboundPorts":"4143,4191","skipOutboundPorts":"","ipv6":"auto"}`
	tests := []struct {
		name    string
		binary  string // "" none, "same", "other"
		conf    string // file name
		content string
		install bool // run Install before checking (after writing conf)
		wantErr string
	}{
		{name: "nothing", wantErr: "no "},
		{name: "other binary", binary: "other", conf: "10-k8s.conflist", content: bridgeList, wantErr: "not this version's binary"},
		{name: "no conf yet", binary: "same", wantErr: "no CNI configuration"},
		{name: "single plugin conf", binary: "same", conf: "10-k8s.conf", content: bridgeConf, wantErr: "not a conflist"},
		{name: "conflist without us", binary: "same", conf: "10-k8s.conflist", content: bridgeList, wantErr: "does not end with"},
		{name: "stale entry", binary: "same", conf: "10-k8s.conflist",
			content: `{"name":"k","plugins":[{"type":"bridge"},{"type":"trellis-cni","proxyUID":1}]}`, wantErr: "does not end with"},
		{name: "our entry not last", binary: "same", conf: "10-k8s.conflist",
			content: `{"name":"k","plugins":[{"type":"bridge"},` + ours + `,{"type":"portmap"}]}`, wantErr: "does not end with"},
		{name: "installed", conf: "10-k8s.conflist", content: bridgeList, install: true},
		{name: "installed from a single conf", conf: "10-k8s.conf", content: bridgeConf, install: true},
		{name: "bad json", binary: "same", conf: "10-k8s.conflist", content: `{`, wantErr: "parsing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newInstaller(t)
			dst := filepath.Join(in.BinDir, PluginType)
			switch tt.binary {
			case "same":
				src, _ := os.ReadFile(in.BinSrc)
				if err := os.WriteFile(dst, src, 0o755); err != nil {
					t.Fatal(err)
				}
			case "other":
				if err := os.WriteFile(dst, []byte("old"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tt.conf != "" {
				if err := os.WriteFile(filepath.Join(in.ConfDir, tt.conf), []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.install {
				if err := in.Install(); err != nil {
					t.Fatal(err)
				}
			}
			err := in.Check()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				// And uninstalling makes it fail again.
				if err := in.Uninstall(); err != nil {
					t.Fatal(err)
				}
				if err := in.Check(); !errors.Is(err, ErrNotInstalled) {
					t.Fatalf("Check after Uninstall = %v, want ErrNotInstalled", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
