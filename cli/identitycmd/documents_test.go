package identitycmd

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// TestVerifyDocument: verify -o json describes the files it was given
// (fingerprints computed here from the files, not by the command).
func TestVerifyDocument(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	newCA(t, dir, now, "48h") // expires within 7 days: one warning
	p := func(f string) string { return filepath.Join(dir, f) }
	out, _, err := run(t, now, nil, "verify", "--bundle", p("ca.crt"), "--issuer", p("issuer.crt"), "--issuer-key", p("issuer.key"), "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		OK     bool `json:"ok"`
		Issuer struct {
			Fingerprint string `json:"fingerprintSHA256"`
		} `json:"issuer"`
		Anchor struct {
			Fingerprint string `json:"fingerprintSHA256"`
		} `json:"anchor"`
		KeyChecked bool     `json:"keyChecked"`
		Warnings   []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	issuer, anchor := fileCerts(t, p("issuer.crt"))[0], fileCerts(t, p("anchor.crt"))[0]
	if !d.OK || !d.KeyChecked || d.Issuer.Fingerprint != pki.CertFingerprint(issuer) || d.Anchor.Fingerprint != pki.CertFingerprint(anchor) || len(d.Warnings) != 1 {
		t.Errorf("document %+v:\n%s", d, out)
	}
}

// TestRotateStatusDocument: --status -o yaml is the same state the text
// shows, and -o with --stage is refused before anything is written.
func TestRotateStatusDocument(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	newCA(t, dir, now, "8760h")
	mustRun(t, now, "rotate", "--state-dir", dir, "--stage", "add-anchor")
	out := mustRun(t, now, "rotate", "--state-dir", dir, "--status", "-o", "yaml")
	var d struct {
		Phase  string `json:"phase"`
		Anchor struct {
			Fingerprint string `json:"fingerprintSHA256"`
		} `json:"anchor"`
		Next *struct {
			Fingerprint string `json:"fingerprintSHA256"`
		} `json:"next"`
		Bundle struct {
			Anchors []struct {
				Fingerprint string `json:"fingerprintSHA256"`
			} `json:"anchors"`
		} `json:"bundle"`
	}
	if err := yaml.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	anchor, next := fileCerts(t, filepath.Join(dir, anchorCertFile))[0], fileCerts(t, filepath.Join(dir, nextAnchorCertFile))[0]
	if !strings.Contains(d.Phase, "next stage: switch-issuer") || d.Anchor.Fingerprint != pki.CertFingerprint(anchor) ||
		d.Next == nil || d.Next.Fingerprint != pki.CertFingerprint(next) || len(d.Bundle.Anchors) != 2 {
		t.Errorf("document %+v:\n%s", d, out)
	}
	if _, _, err := run(t, now, nil, "rotate", "--state-dir", dir, "--stage", "switch-issuer", "--skip-proxy-check", "-o", "json"); err == nil || !strings.Contains(err.Error(), "only --status") {
		t.Errorf("-o json with --stage: %v", err)
	}
	if cur := fileCerts(t, filepath.Join(dir, anchorCertFile))[0]; !cur.Equal(anchor) {
		t.Error("a refused stage switched the anchor")
	}
}
