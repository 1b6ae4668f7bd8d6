package ewtoken

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ktesting "k8s.io/client-go/testing"

	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/pki"
)

var renewToken = ewtoken.RenewToken("shop", "legacy")

func TestRenew(t *testing.T) {
	h := newHarness(t)
	first := h.bootstrap()
	h.advance(40 * time.Minute)
	resp, err := h.certify(renewToken, legacyID, h.key, first.GetChain())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(resp.GetChain()[0])
	if e := h.workload("legacy").Status.CertificateExpiry; e == nil || e.Unix() != leaf.NotAfter.Unix() {
		t.Errorf("status.certificateExpiry %v, want the renewed %v", e, leaf.NotAfter)
	}
	// And again with the renewed certificate.
	if _, err := h.certify(renewToken, legacyID, h.key, resp.GetChain()); err != nil {
		t.Fatal(err)
	}
}

func TestRenewRefusals(t *testing.T) {
	other, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		call   func(h *harness, chain [][]byte) error
		code   codes.Code
		reason string
	}{
		{"no certificate presented", func(h *harness, _ [][]byte) error {
			_, err := h.certify(renewToken, legacyID, h.key, nil)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"certificate of another key", func(h *harness, _ [][]byte) error {
			// A valid certificate of the same identity (say, a pod's
			// stolen one): its key is not the one that bootstrapped.
			st := h.authority.State()
			leaf, err := st.Issuer.Sign(other.Public(), legacyID, time.Hour, h.clock())
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.certify(renewToken, legacyID, other, st.Issuer.ChainDER(leaf))
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"CSR of another key than the certificate's", func(h *harness, chain [][]byte) error {
			_, err := h.certify(renewToken, legacyID, other, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"certificate not chaining to the anchors", func(h *harness, _ [][]byte) error {
			// The right key, signed by a CA the controller does not trust.
			rogue, err := ca.LoadOrCreate(t.TempDir(), h.clock(), ca.Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			st := rogue.State()
			leaf, err := st.Issuer.Sign(h.key.Public(), legacyID, time.Hour, h.clock())
			if err != nil {
				t.Fatal(err)
			}
			_, err = h.certify(renewToken, legacyID, h.key, st.Issuer.ChainDER(leaf))
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"certificate expired", func(h *harness, chain [][]byte) error {
			h.advance(2 * time.Hour)
			_, err := h.certify(renewToken, legacyID, h.key, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"workload deleted", func(h *harness, chain [][]byte) error {
			if err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Delete(context.Background(), "legacy", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := h.certify(renewToken, legacyID, h.key, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonUnknownIdentity},
		{"workload recreated", func(h *harness, chain [][]byte) error {
			if err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Delete(context.Background(), "legacy", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			h.addWorkload("legacy", "legacy")
			_, err := h.certify(renewToken, legacyID, h.key, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"a new token redeemed by another key", func(h *harness, chain [][]byte) error {
			if _, err := h.certify([]byte(h.mint("legacy", time.Hour).Token()), legacyID, other, nil); err != nil {
				t.Fatal(err)
			}
			_, err := h.certify(renewToken, legacyID, h.key, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"renewal token of another workload", func(h *harness, chain [][]byte) error {
			h.addWorkload("other", "legacy")
			_, err := h.certify(ewtoken.RenewToken("shop", "other"), legacyID, h.key, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadClientCertificate},
		{"renewal token of another namespace", func(h *harness, chain [][]byte) error {
			_, err := h.certify(ewtoken.RenewToken("other", "legacy"), legacyID, h.key, chain)
			return err
		}, codes.PermissionDenied, metrics.ReasonIdentityMismatch},
		{"malformed renewal token", func(h *harness, chain [][]byte) error {
			_, err := h.certify([]byte("trellis-ew-renew-v1:shop"), legacyID, h.key, chain)
			return err
		}, codes.Unauthenticated, metrics.ReasonBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			chain := h.bootstrap().GetChain()
			h.wantRefused(tc.call(h, chain), tc.code, tc.reason)
		})
	}
}

// TestRenewStatusFailureStillIssues: a renewal whose status write fails
// gets its certificate; the failure is counted.
func TestRenewStatusFailureStillIssues(t *testing.T) {
	h := newHarness(t)
	chain := h.bootstrap().GetChain()
	h.wl.PrependReactor("update", "externalworkloads", func(a ktesting.Action) (bool, runtime.Object, error) {
		return a.GetSubresource() == "status", nil, errors.New("etcd is down")
	})
	h.advance(time.Minute)
	if _, err := h.certify(renewToken, legacyID, h.key, chain); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(h.auth.m.statusErrors); n != 1 {
		t.Errorf("status errors = %v, want 1", n)
	}
}

// TestRenewNeverRestoresAReplacedKey: a bootstrap of another key landing
// while a renewal is issued is not overwritten by it.
func TestRenewNeverRestoresAReplacedKey(t *testing.T) {
	h := newHarness(t)
	h.bootstrap()
	ew := h.workload("legacy")
	keySHA := ew.Status.KeySHA256
	replaced := ew.DeepCopy()
	replaced.Status.KeySHA256 = "replaced"
	if _, err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").UpdateStatus(context.Background(), replaced, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The renewal's write after a conflict: it reads the workload again
	// and finds another key.
	err := h.auth.recordIssued(context.Background(), h.workload("legacy"), keySHA, h.clock().Add(time.Hour), true)
	if !errors.Is(err, errKeyReplaced) {
		t.Fatalf("recordIssued = %v, want errKeyReplaced", err)
	}
	if got := h.workload("legacy").Status.KeySHA256; got != "replaced" {
		t.Errorf("status.keySHA256 = %q, want the replacing key's", got)
	}
}
