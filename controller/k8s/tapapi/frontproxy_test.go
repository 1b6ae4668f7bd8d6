package tapapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/controller/tapfan"
)

// testCA is a plain x509 CA, as the kube-apiserver's front-proxy CA is.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestAuthenticate(t *testing.T) {
	front, cluster := newTestCA(t, "front-proxy-ca"), newTestCA(t, "cluster-ca")
	rh := &RequestHeader{
		CAs: front.pool, AllowedNames: []string{"front-proxy-client"},
		UserHeaders: []string{"X-Remote-User"}, GroupHeaders: []string{"X-Remote-Group"}, ExtraPrefixes: []string{"X-Remote-Extra-"},
	}
	anyName := *rh
	anyName.AllowedNames = nil
	headers := http.Header{
		"X-Remote-User":                  {"alice"},
		"X-Remote-Group":                 {"dev", "system:authenticated"},
		"X-Remote-Extra-Scopes":          {"a", "b"},
		"X-Remote-Extra-Example.com%2fk": {"v"},
	}
	good := front.issue(t, "front-proxy-client", x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name    string
		rh      *RequestHeader
		cert    *tls.Certificate
		headers http.Header
		want    User
		wantErr bool
	}{
		{name: "front proxy", rh: rh, cert: &good, headers: headers, want: User{Name: "alice", Groups: []string{"dev", "system:authenticated"},
			Extra: map[string][]string{"scopes": {"a", "b"}, "example.com/k": {"v"}}}},
		{name: "no certificate", rh: rh, headers: headers, wantErr: true},
		{name: "cluster CA certificate", rh: rh, cert: ptr(cluster.issue(t, "front-proxy-client", x509.ExtKeyUsageClientAuth)), headers: headers, wantErr: true},
		{name: "name not allowed", rh: rh, cert: ptr(front.issue(t, "someone-else", x509.ExtKeyUsageClientAuth)), headers: headers, wantErr: true},
		{name: "any name allowed when the list is empty", rh: &anyName, cert: ptr(front.issue(t, "someone-else", x509.ExtKeyUsageClientAuth)),
			headers: http.Header{"X-Remote-User": {"bob"}}, want: User{Name: "bob"}},
		{name: "server-only certificate", rh: rh, cert: ptr(front.issue(t, "front-proxy-client", x509.ExtKeyUsageServerAuth)), headers: headers, wantErr: true},
		{name: "no user header", rh: rh, cert: &good, headers: http.Header{"X-Remote-Group": {"dev"}}, wantErr: true},
		{name: "not configured", rh: &RequestHeader{}, cert: &good, headers: headers, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", nil)
			r.Header = tc.headers
			r.TLS = &tls.ConnectionState{}
			if tc.cert != nil {
				r.TLS.PeerCertificates = []*x509.Certificate{tc.cert.Leaf}
			}
			got, err := tc.rh.Authenticate(r, time.Now())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("user = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestParseRequestHeader(t *testing.T) {
	ca := newTestCA(t, "front-proxy-ca")
	caPEM := string(pemCert(ca.cert))
	for _, tc := range []struct {
		name    string
		data    map[string]string
		wantErr bool
	}{
		{name: "kube-apiserver's", data: map[string]string{
			"requestheader-client-ca-file": caPEM, "requestheader-allowed-names": `["front-proxy-client"]`,
			"requestheader-username-headers": `["X-Remote-User"]`, "requestheader-group-headers": `["X-Remote-Group"]`,
			"requestheader-extra-headers-prefix": `["X-Remote-Extra-"]`,
		}},
		{name: "aggregation off", data: map[string]string{"client-ca-file": caPEM}, wantErr: true},
		{name: "no PEM", data: map[string]string{"requestheader-client-ca-file": "junk", "requestheader-username-headers": `["X-Remote-User"]`}, wantErr: true},
		{name: "bad JSON", data: map[string]string{"requestheader-client-ca-file": caPEM, "requestheader-username-headers": `X-Remote-User`}, wantErr: true},
		{name: "no user headers", data: map[string]string{"requestheader-client-ca-file": caPEM}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rh, err := ParseRequestHeader(tc.data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (len(rh.AllowedNames) != 1 || rh.ExtraPrefixes[0] != "X-Remote-Extra-" || rh.GroupHeaders[0] != "X-Remote-Group") {
				t.Errorf("parsed %+v", rh)
			}
		})
	}
}

func TestParseTapPath(t *testing.T) {
	const p = "/apis/tap.trellis.io/v1alpha1/watch/namespaces/"
	for _, tc := range []struct {
		path string
		want Target
		ok   bool
	}{
		{p + "demo/tap", Target{Namespace: "demo", Resource: "namespaces", Name: "demo"}, true},
		{p + "demo/deployments/web/tap", Target{Namespace: "demo", Resource: "deployments", Name: "web"}, true},
		{p + "demo/pods/web-1/tap", Target{Namespace: "demo", Resource: "pods", Name: "web-1"}, true},
		{p + "demo/services/web/tap", Target{}, false},
		{p + "demo/deployments/web", Target{}, false},
		{p + "demo/deployments//tap", Target{}, false},
		{p + "/tap", Target{}, false},
		{"/apis/tap.trellis.io/v1alpha1/namespaces/demo/deployments/web/tap", Target{}, false},
		{p + "demo/deployments/web/tap/extra", Target{}, false},
	} {
		got, ok := parseTapPath(tc.path)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseTapPath(%q) = %+v, %v; want %+v, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseTapPath(f *testing.F) {
	f.Add("/apis/tap.trellis.io/v1alpha1/watch/namespaces/demo/deployments/web/tap")
	f.Add("/apis/tap.trellis.io/v1alpha1/watch/namespaces/demo/tap")
	f.Fuzz(func(t *testing.T, p string) {
		got, ok := parseTapPath(p)
		if ok && (got.Namespace == "" || got.Name == "" || got.Resource == "") {
			t.Fatalf("%q parsed to an incomplete target %+v", p, got)
		}
	})
}

func FuzzReadObserveRequest(f *testing.F) {
	f.Add([]byte(`{"limit":3,"match":{"pathPrefix":"/books"},"bodyBytes":10}`))
	f.Add([]byte(`{"sample":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := tapfan.ReadObserveRequest(bytesReader(data))
		if err == nil && (req.GetBodyBytes() > tapfan.MaxBodyBytes || req.GetSample() < 0 || req.GetSample() > 1) {
			t.Fatalf("accepted %+v", req)
		}
	})
}
