package identity

import (
	"crypto/x509"
	"net/url"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		sni     string
	}{
		{in: "spiffe://cluster.local/ns/demo/sa/books", sni: "books.demo.serviceaccount.identity.cluster.local"},
		{in: "spiffe://example.org/ns/a-b/sa/c1", sni: "c1.a-b.serviceaccount.identity.example.org"},
		{in: "https://cluster.local/ns/demo/sa/books", wantErr: true},
		{in: "spiffe://cluster.local/ns/demo/sa/", wantErr: true},
		{in: "spiffe://cluster.local/ns/demo/sa/books/extra", wantErr: true},
		{in: "spiffe://cluster.local/sa/books/ns/demo", wantErr: true},
		{in: "spiffe://Cluster.local/ns/demo/sa/books", wantErr: true},
		{in: "spiffe://cluster.local/ns/de.mo/sa/books", wantErr: true},
		{in: "spiffe://cluster.local/ns/-demo/sa/books", wantErr: true},
		{in: "spiffe:///ns/demo/sa/books", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := Parse(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Parse(%q) = %v, want error", tt.in, id)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if id.String() != tt.in || id.URL().String() != tt.in {
				t.Errorf("round trip: String %q URL %q, want %q", id.String(), id.URL(), tt.in)
			}
			if id.ServerName() != tt.sni {
				t.Errorf("ServerName = %q, want %q", id.ServerName(), tt.sni)
			}
			back, err := ParseServerName(id.ServerName())
			if err != nil || back != id {
				t.Errorf("ParseServerName(%q) = %v, %v; want %v", id.ServerName(), back, err, id)
			}
		})
	}
}

func TestFromCertificate(t *testing.T) {
	u, _ := url.Parse("spiffe://cluster.local/ns/demo/sa/web")
	u2, _ := url.Parse("spiffe://cluster.local/ns/demo/sa/other")
	tests := []struct {
		name    string
		cert    x509.Certificate
		wantErr bool
	}{
		{name: "one spiffe uri", cert: x509.Certificate{URIs: []*url.URL{u}}},
		{name: "no uri", cert: x509.Certificate{}, wantErr: true},
		{name: "two uris", cert: x509.Certificate{URIs: []*url.URL{u, u2}}, wantErr: true},
		{name: "extra dns", cert: x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{"web"}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := FromCertificate(&tt.cert)
			if (err != nil) != tt.wantErr {
				t.Fatalf("FromCertificate: id %v err %v, wantErr %v", id, err, tt.wantErr)
			}
			if err == nil && id.String() != u.String() {
				t.Fatalf("id = %v, want %v", id, u)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"spiffe://cluster.local/ns/demo/sa/books", "spiffe://a/ns/b/sa/c", "spiffe://", "books.demo.serviceaccount.identity.cluster.local"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if id, err := Parse(s); err == nil {
			if id.String() != s {
				t.Fatalf("Parse(%q) accepted but prints %q", s, id.String())
			}
			back, err := ParseServerName(id.ServerName())
			if err != nil || back != id {
				t.Fatalf("DNS form of %q does not round trip: %v %v", s, back, err)
			}
		}
		if id, err := ParseServerName(s); err == nil && id.ServerName() != s {
			t.Fatalf("ParseServerName(%q) accepted but prints %q", s, id.ServerName())
		}
	})
}
