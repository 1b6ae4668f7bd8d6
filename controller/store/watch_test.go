package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitChange waits for the store to replace its config, bounded in time.
func waitChange(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("store did not pick up the change")
	}
}

func startStore(t *testing.T, content string) (*Store, string, <-chan error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 100)
	s, err := Open(path, Options{OnReload: func(err error) { errs <- err }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return s, path, errs
}

func TestWatchAtomicRenameAndInPlace(t *testing.T) {
	s, path, _ := startStore(t, validYAML)
	c0, ch := s.Current()
	if c0.CertificateLifetime != time.Hour {
		t.Fatal("initial config not loaded")
	}

	// Editor style: write a temporary file, rename it over the original.
	tmp := path + ".swp"
	if err := os.WriteFile(tmp, []byte(strings.Replace(validYAML, "certificateLifetime: 1h", "certificateLifetime: 2h", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitChange(t, ch)
	c1, ch := s.Current()
	if c1.CertificateLifetime != 2*time.Hour {
		t.Fatalf("after rename: lifetime %s", c1.CertificateLifetime)
	}

	// In-place rewrite of the same inode.
	if err := os.WriteFile(path, []byte(strings.Replace(validYAML, "certificateLifetime: 1h", "certificateLifetime: 3h", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitChange(t, ch)
	c2, _ := s.Current()
	if c2.CertificateLifetime != 3*time.Hour {
		t.Fatalf("after in-place write: lifetime %s", c2.CertificateLifetime)
	}
}

func TestWatchBadEditKeepsLastGood(t *testing.T) {
	s, path, errs := startStore(t, validYAML)
	good, ch := s.Current()
	bad := strings.Replace(validYAML, "port: 9090", "port: 0", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if err == nil || !strings.Contains(err.Error(), "ports[1].port") {
			t.Fatalf("reload error = %v, want one naming ports[1].port", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bad edit was not reported")
	}
	if cur, _ := s.Current(); cur != good {
		t.Fatal("bad edit replaced the config")
	}
	// Fixing the file is picked up.
	fixed := strings.Replace(validYAML, "zone: zone-a", "zone: zone-b", 1)
	if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	waitChange(t, ch)
	cur, _ := s.Current()
	if cur.Workloads[0].Zone != "zone-b" {
		t.Fatalf("zone %q after fix", cur.Workloads[0].Zone)
	}
}

func TestReloadRefusesTrustDomainChange(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(path, []byte(validYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(validYAML, "example.org", "other.org", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "trustDomain") {
		t.Fatalf("Reload = %v, want a trustDomain error", err)
	}
	if c, _ := s.Current(); c.TrustDomain != "example.org" {
		t.Fatal("trust domain changed")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.yaml"), Options{}); err == nil {
		t.Fatal("missing file accepted")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("services: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Open(bad) = %v, want an error naming the file", err)
	}
}
