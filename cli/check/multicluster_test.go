package check

import (
	"crypto/ecdsa"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// mcCluster is one cluster of a multicluster fixture: the anchors its
// proxies trust, its issuer, and its controller's trust domain.
type mcCluster struct {
	anchors []*x509.Certificate
	issuer  *x509.Certificate
	td      string // "" leaves the controller without --trust-domain
	accepts string // --accept-trust-domains ("" none)
}

func (m mcCluster) env(t *testing.T) *Env {
	t.Helper()
	in := newInstalled(newPKI(t, 365*24*time.Hour, 90*24*time.Hour))
	var bundle []byte
	for _, a := range m.anchors {
		bundle = append(bundle, pemOf(a)...)
	}
	in.anchorsCM.Data[AnchorsKey] = string(bundle)
	in.issuerSec.Data["tls.crt"] = pemOf(m.issuer)
	if m.td != "" {
		c := &in.deploy.Spec.Template.Spec.Containers[0]
		c.Args = append(c.Args, "--trust-anchors-file=/x", "--trust-domain="+m.td)
	}
	if m.accepts != "" {
		c := &in.deploy.Spec.Template.Spec.Containers[0]
		c.Args = append(c.Args, "--accept-trust-domains", m.accepts)
	}
	return healthyCluster().env(t, in.objects()...)
}

type mcCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) mcCA {
	t.Helper()
	c, k, err := pki.NewRoot(name, 365*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	return mcCA{c, k}
}

// issuer signs an issuer for trust domain td ("" unconstrained).
func (ca mcCA) issuer(t *testing.T, name, td string) *x509.Certificate {
	t.Helper()
	var is *pki.Issuer
	var err error
	if td == "" {
		is, err = pki.NewIssuer(ca.cert, ca.key, name, 90*24*time.Hour, t0)
	} else {
		is, err = pki.NewTrustDomainIssuer(ca.cert, ca.key, name, td, 90*24*time.Hour, t0)
	}
	if err != nil {
		t.Fatal(err)
	}
	return is.Cert
}

func TestMulticlusterChecks(t *testing.T) {
	shared, other := newCA(t, "shared-anchor"), newCA(t, "other-anchor")
	a := func(t *testing.T) mcCluster {
		return mcCluster{anchors: []*x509.Certificate{shared.cert}, issuer: shared.issuer(t, "issuer-a", "cluster-a.local"), td: "cluster-a.local", accepts: "cluster-b.local"}
	}
	b := func(t *testing.T) mcCluster {
		return mcCluster{anchors: []*x509.Certificate{shared.cert}, issuer: shared.issuer(t, "issuer-b", "cluster-b.local"), td: "cluster-b.local", accepts: "cluster-x.local,cluster-a.local"}
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, a, b *mcCluster)
		noPeer bool
		want   map[string]Status // by anchor; the rest must be OK
		msg    string            // in the first not-OK message
	}{
		{name: "one anchor, an issuer per trust domain"},
		{
			name: "the peer's issuer under another anchor",
			change: func(t *testing.T, _, b *mcCluster) {
				b.anchors = []*x509.Certificate{other.cert}
				b.issuer = other.issuer(t, "issuer-b", "cluster-b.local")
			},
			want: map[string]Status{"trusts-peer": Fail, "peer-trusts": Fail},
			msg:  `the peer b's issuer "issuer-b" does not chain to this cluster's trust anchors`,
		},
		{
			name: "this cluster trusts both anchors, the peer only its own",
			change: func(t *testing.T, a, b *mcCluster) {
				a.anchors = append(a.anchors, other.cert)
				b.anchors = []*x509.Certificate{other.cert}
				b.issuer = other.issuer(t, "issuer-b", "cluster-b.local")
			},
			want: map[string]Status{"peer-trusts": Fail},
			msg:  `this cluster's issuer "issuer-a" does not chain to the peer b's trust anchors`,
		},
		{
			name:   "same trust domain",
			change: func(_ *testing.T, a, b *mcCluster) { a.td, b.td = "", "" },
			want:   map[string]Status{"trust-domains": Warn},
			msg:    `both clusters sign identities in "cluster.local"`,
		},
		{
			name:   "the peer's issuer is unconstrained",
			change: func(t *testing.T, _, b *mcCluster) { b.issuer = shared.issuer(t, "issuer-b", "") },
			want:   map[string]Status{"trust-domains": Fail},
			msg:    `the peer b's issuer "issuer-b" can sign identities in "cluster-a.local", the other cluster's trust domain: it has no URI name constraint`,
		},
		{
			name: "the peer's issuer is constrained to a parent of this cluster's trust domain",
			change: func(t *testing.T, a, b *mcCluster) {
				a.td, b.td = "a.example.org", "example.org"
				a.accepts, b.accepts = "example.org", "a.example.org"
				a.issuer = shared.issuer(t, "issuer-a", "a.example.org")
				b.issuer = shared.issuer(t, "issuer-b", "example.org")
			},
			want: map[string]Status{"trust-domains": Fail},
			msg:  `its name constraint permits "example.org"`,
		},
		{
			name:   "the peer does not accept this cluster's trust domain",
			change: func(_ *testing.T, _, b *mcCluster) { b.accepts = "" },
			want:   map[string]Status{"trust-domains": Fail},
			msg:    `the peer b's proxies refuse workloads of "cluster-a.local"`,
		},
		{
			name:   "no peer",
			noPeer: true,
			want:   map[string]Status{"peer-identity": Fail, "trusts-peer": Skip, "peer-trusts": Skip, "trust-domains": Skip},
			msg:    "no peer cluster given",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, cb := a(t), b(t)
			if tc.change != nil {
				tc.change(t, &ca, &cb)
			}
			e := ca.env(t)
			if !tc.noPeer {
				e.Peer, e.PeerName = cb.env(t), "b"
			}
			results := Run(t.Context(), e, MulticlusterChecks())
			var firstBad string
			seen := map[string]bool{}
			for _, r := range results {
				seen[r.ID] = true
				want, listed := tc.want[r.ID]
				if !listed {
					want = OK
				}
				if r.Status != want {
					t.Errorf("%s: %s %q, want %s", r.ID, r.Status, r.Message, want)
				}
				if r.Status != OK && firstBad == "" {
					firstBad = r.Message
					if r.Hint == "" {
						t.Errorf("%s: %s without a hint", r.ID, r.Status)
					}
				}
			}
			for id := range tc.want {
				if !seen[id] {
					t.Errorf("%s did not run", id)
				}
			}
			if tc.msg != "" && !strings.Contains(firstBad, tc.msg) {
				t.Errorf("first message %q, want it to contain %q", firstBad, tc.msg)
			}
		})
	}
}

func TestURIDomainMatches(t *testing.T) {
	for _, tc := range []struct {
		constraint, host string
		want             bool
	}{
		{"cluster-a.local", "cluster-a.local", true},
		{"cluster-a.local", "x.cluster-a.local", true},
		{"cluster-a.local", "cluster-b.local", false},
		{"cluster-a.local", "evilcluster-a.local", false},
		{".cluster-a.local", "cluster-a.local", false},
		{".cluster-a.local", "x.cluster-a.local", true},
		{"local", "cluster-a.local", true},
		{"Cluster-A.local", "cluster-a.LOCAL", true},
	} {
		if got := uriDomainMatches(tc.constraint, tc.host); got != tc.want {
			t.Errorf("uriDomainMatches(%q, %q) = %v, want %v", tc.constraint, tc.host, got, tc.want)
		}
	}
}
