package ca

import (
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// FuzzParseMaterial: whatever the files hold, parsing returns a State or an
// error, never panics, and a returned State is consistent.
func FuzzParseMaterial(f *testing.F) {
	now := time.Now()
	anchor, anchorKey, err := pki.NewRoot("a", time.Hour, now)
	if err != nil {
		f.Fatal(err)
	}
	is, err := pki.NewIssuer(anchor, anchorKey, "i", time.Hour, now)
	if err != nil {
		f.Fatal(err)
	}
	k, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		f.Fatal(err)
	}
	ak, _ := pki.EncodeKeyPEM(anchorKey)
	certPEM, anchorPEM := pki.EncodeCertsPEM(is.Cert), pki.EncodeCertsPEM(anchor)
	f.Add(certPEM, k, anchorPEM)
	f.Add(pki.EncodeCertsPEM(is.Cert, anchor), k, anchorPEM)
	f.Add(anchorPEM, ak, anchorPEM)
	f.Add(certPEM, ak, anchorPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), k, anchorPEM)
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, cert, key, bundle []byte) {
		st, err := parseMaterial(material{certName: "c", keyName: "k", bundleName: "b", cert: cert, key: key, bundle: bundle}, now)
		if err != nil {
			return
		}
		if st.Issuer == nil || st.Issuer.Key == nil || len(st.Anchors) == 0 || st.ChainAnchor == nil || st.ValidUntil().Before(st.validFrom) {
			t.Fatalf("inconsistent State from valid-looking input")
		}
	})
}
