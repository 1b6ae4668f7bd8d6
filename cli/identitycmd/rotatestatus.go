package identitycmd

import (
	"crypto/x509"
	"fmt"
	"io"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// statusDoc is what rotate --status shows, for a state dir or a cluster:
// the text below, or the document itself under -o json|yaml.
type statusDoc struct {
	Target string       `json:"target"` // "state dir DIR" or "Secret NS/NAME"
	Phase  string       `json:"phase"`
	Notes  []string     `json:"notes"`
	Anchor certDoc      `json:"anchor"`
	Next   *certDoc     `json:"next,omitempty"` // the pending anchor, between add-anchor and switch-issuer
	Issuer certDoc      `json:"issuer"`
	Bundle statusBundle `json:"bundle"`
}

type statusBundle struct {
	Source      string    `json:"source"`
	Fingerprint string    `json:"fingerprint"`
	Anchors     []certDoc `json:"anchors"`
}

// certDoc is a certificate's description and, for the text, its common name.
type certDoc struct {
	pki.CertInfo
	cn string
}

func describe(certs []*x509.Certificate, now time.Time) []certDoc {
	infos := pki.Describe(certs, now)
	out := make([]certDoc, len(certs))
	for i, c := range certs {
		out[i] = certDoc{CertInfo: infos[i], cn: c.Subject.CommonName}
	}
	return out
}

func newStatusDoc(target string, p phase, notes []string, anchor, next, issuer *x509.Certificate, src string, bundle []*x509.Certificate, now time.Time) statusDoc {
	d := statusDoc{Target: target, Phase: p.String(), Notes: notes, Bundle: statusBundle{
		Source: src, Fingerprint: pki.Fingerprint(bundle), Anchors: describe(bundle, now),
	}}
	if d.Notes == nil {
		d.Notes = []string{}
	}
	d.Anchor, d.Issuer = describe([]*x509.Certificate{anchor}, now)[0], describe([]*x509.Certificate{issuer}, now)[0]
	if next != nil {
		d.Next = &describe([]*x509.Certificate{next}, now)[0]
	}
	return d
}

func printStatusDoc(w io.Writer, d statusDoc) error {
	fmt.Fprintf(w, "%s: %s\n", d.Target, d.Phase)
	for _, n := range d.Notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	line := func(role string, c certDoc) {
		state := human(time.Duration(c.SecondsLeft)*time.Second) + " left"
		if c.Expired {
			state = "EXPIRED"
		}
		fmt.Fprintf(w, "  %-9s %-34q SHA-256 %s  until %s (%s)\n", role, c.cn, shortFP(c.Fingerprint),
			c.NotAfter.UTC().Format(time.RFC3339), state)
	}
	line("anchor", d.Anchor)
	if d.Next != nil {
		line("next", *d.Next)
	}
	line("issuer", d.Issuer)
	fmt.Fprintf(w, "  bundle   %d anchor(s) from %s, fingerprint %s\n", len(d.Bundle.Anchors), d.Bundle.Source, d.Bundle.Fingerprint)
	for _, c := range d.Bundle.Anchors {
		line("in bundle", c)
	}
	return nil
}
