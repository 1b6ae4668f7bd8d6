package ewtoken

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kfake "k8s.io/client-go/kubernetes/fake"
	ktesting "k8s.io/client-go/testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	wlfake "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/fake"
	wlv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/ca"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/ewtoken/ewsecret"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

const cpNS = "trellis-system"

var (
	legacyID   = identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "legacy"}
	secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
)

// harness is the identity service with the external workload
// authenticator in front of a recording Next, on fake clientsets.
type harness struct {
	t         *testing.T
	kube      *kfake.Clientset
	wl        *wlfake.Clientset
	authority *ca.CA
	auth      *Authenticator
	svc       *identitysvc.Service
	m         *metrics.Metrics
	next      *recordingAuth
	key       crypto.Signer // the workload proxy's key

	mu  sync.Mutex
	now time.Time
}

// recordingAuth stands for TokenReview.
type recordingAuth struct{ calls int }

func (r *recordingAuth) Authenticate(context.Context, identitysvc.Request) (identitysvc.Caller, error) {
	r.calls++
	return identitysvc.Caller{Name: "pod"}, nil
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, kube: kfake.NewClientset(), wl: wlfake.NewSimpleClientset(), m: metrics.New(), next: &recordingAuth{}, now: time.Now()}
	var err error
	if h.authority, err = ca.LoadOrCreate(t.TempDir(), h.clock(), ca.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	if h.key, err = pki.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	h.kube.PrependReactor("delete", "secrets", h.deletePreconditions)
	h.auth, err = New(Config{
		Next: h.next, Secrets: h.kube.CoreV1(), Workloads: h.wl.WorkloadV1alpha1(), Namespace: cpNS, TrustDomain: "cluster.local",
		Anchors: func() *x509.CertPool { return h.authority.State().Pool }, Registerer: h.m.Registry, Now: h.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.svc = &identitysvc.Service{Auth: h.auth, CA: h.authority, Metrics: h.m, Log: slog.New(slog.DiscardHandler), Now: h.clock,
		Lifetime: func() time.Duration { return time.Hour }}
	h.addWorkload("legacy", "legacy")
	return h
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
}

// deletePreconditions makes the fake API server honour a delete's UID and
// resourceVersion preconditions, as the real one does.
func (h *harness) deletePreconditions(a ktesting.Action) (bool, runtime.Object, error) {
	d := a.(ktesting.DeleteActionImpl)
	pre := d.DeleteOptions.Preconditions
	if pre == nil {
		return false, nil, nil
	}
	obj, err := h.kube.Tracker().Get(secretsGVR, d.Namespace, d.Name)
	if err != nil {
		return true, nil, err
	}
	s := obj.(*corev1.Secret)
	if (pre.UID != nil && *pre.UID != s.UID) || (pre.ResourceVersion != nil && *pre.ResourceVersion != s.ResourceVersion) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, d.Name, errors.New("precondition failed"))
	}
	return false, nil, nil
}

func (h *harness) addWorkload(name, sa string) {
	h.t.Helper()
	ew := &wlv1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Generation: 1},
		Spec:       wlv1.ExternalWorkloadSpec{ServiceAccount: sa, Addresses: []wlv1.WorkloadAddress{{IP: "172.31.254.2"}}},
	}
	if _, err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Create(context.Background(), ew, metav1.CreateOptions{}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) workload(name string) *wlv1.ExternalWorkload {
	h.t.Helper()
	ew, err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return ew
}

func (h *harness) mint(name string, ttl time.Duration) ewtoken.Bootstrap {
	h.t.Helper()
	b, _, err := ewsecret.Mint(context.Background(), h.kube.CoreV1(), cpNS, "shop", name, ttl, h.clock())
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *harness) secretExists(b ewtoken.Bootstrap) bool {
	_, err := h.kube.CoreV1().Secrets(cpNS).Get(context.Background(), ewsecret.Name(b.Hash()), metav1.GetOptions{})
	return err == nil
}

func csrFor(t *testing.T, key crypto.Signer, id identity.ID) []byte {
	t.Helper()
	der, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// certify calls Certify with key's CSR; chain, when set, is the client
// certificate of the call's TLS handshake.
func (h *harness) certify(token []byte, id identity.ID, key crypto.Signer, chain [][]byte) (*apiv1.CertifyResponse, error) {
	return h.svc.Certify(peerContext(h.t, chain), &apiv1.CertifyRequest{
		Identity: id.String(), Token: token, CertificateSigningRequest: csrFor(h.t, key, id),
	})
}

func peerContext(t *testing.T, chain [][]byte) context.Context {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(172, 31, 254, 2), Port: 40000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{HandshakeComplete: true, PeerCertificates: certs}},
	})
}

func (h *harness) refused(reason string) float64 {
	return testutil.ToFloat64(h.m.CertificatesRefused.WithLabelValues(reason))
}

// wantRefused checks a refusal's code and reason (the only one counted).
func (h *harness) wantRefused(err error, code codes.Code, reason string) {
	h.t.Helper()
	if status.Code(err) != code {
		h.t.Fatalf("code %v (%v), want %v", status.Code(err), err, code)
	}
	if n := h.refused(reason); n != 1 {
		h.t.Errorf("refused{reason=%q} = %v, want 1", reason, n)
	}
}

// bootstrap redeems a fresh token for legacy with h.key.
func (h *harness) bootstrap() *apiv1.CertifyResponse {
	h.t.Helper()
	resp, err := h.certify([]byte(h.mint("legacy", time.Hour).Token()), legacyID, h.key, nil)
	if err != nil {
		h.t.Fatalf("bootstrap: %v", err)
	}
	return resp
}

func TestBootstrap(t *testing.T) {
	h := newHarness(t)
	b := h.mint("legacy", time.Hour)
	resp, err := h.certify([]byte(b.Token()), legacyID, h.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(resp.GetChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if h.secretExists(b) {
		t.Error("the redeemed token's Secret is still there")
	}
	ew := h.workload("legacy")
	wantKey, _ := ewtoken.KeySHA256(h.key.Public())
	if ew.Status.KeySHA256 != wantKey {
		t.Errorf("status.keySHA256 %q, want %q", ew.Status.KeySHA256, wantKey)
	}
	if e := ew.Status.CertificateExpiry; e == nil || e.Unix() != leaf.NotAfter.Unix() {
		t.Errorf("status.certificateExpiry %v, want %v", e, leaf.NotAfter)
	}
	c := meta.FindStatusCondition(ew.Status.Conditions, wlv1.ConditionCertified)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != wlv1.ReasonCertified || c.ObservedGeneration != 1 {
		t.Errorf("Certified condition %+v", c)
	}
	if n := testutil.ToFloat64(h.auth.m.tokensDeleted.WithLabelValues(deletedRedeemed)); n != 1 {
		t.Errorf("tokens deleted (redeemed) = %v, want 1", n)
	}

	// Single use.
	_, err = h.certify([]byte(b.Token()), legacyID, h.key, nil)
	h.wantRefused(err, codes.Unauthenticated, metrics.ReasonBadToken)
}

// TestBootstrapRefusals: each refusal leaves the token unspent (but an
// expired one, which is deleted).
func TestBootstrapRefusals(t *testing.T) {
	other, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		setup  func(h *harness, b ewtoken.Bootstrap) (token []byte, id identity.ID, csr []byte)
		code   codes.Code
		reason string
		spent  bool
	}{
		{"wrong secret", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			wrong, _ := ewtoken.NewBootstrap("shop", "legacy", nil)
			return []byte(wrong.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonBadToken, false},
		{"hash mismatch under the token's name", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			s, _ := h.kube.CoreV1().Secrets(cpNS).Get(context.Background(), ewsecret.Name(b.Hash()), metav1.GetOptions{})
			s.Data[ewsecret.KeyHash] = []byte(b.Hash()[:16] + "000000000000000000000000000000000000000000000000")
			if _, err := h.kube.CoreV1().Secrets(cpNS).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			return []byte(b.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonBadToken, false},
		{"record of another workload", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			s, _ := h.kube.CoreV1().Secrets(cpNS).Get(context.Background(), ewsecret.Name(b.Hash()), metav1.GetOptions{})
			s.Data[ewsecret.KeyName] = []byte("other")
			if _, err := h.kube.CoreV1().Secrets(cpNS).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			return []byte(b.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonBadToken, false},
		{"malformed", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			return []byte(b.Token() + "x"), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonBadToken, false},
		{"expired", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			h.advance(time.Hour + time.Second)
			return []byte(b.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonBadToken, true},
		{"another service account", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			id := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "admin"}
			return []byte(b.Token()), id, csrFor(t, h.key, id)
		}, codes.PermissionDenied, metrics.ReasonIdentityMismatch, false},
		{"another namespace", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			id := identity.ID{TrustDomain: "cluster.local", Namespace: "other", ServiceAccount: "legacy"}
			return []byte(b.Token()), id, csrFor(t, h.key, id)
		}, codes.PermissionDenied, metrics.ReasonIdentityMismatch, false},
		{"another trust domain", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			id := identity.ID{TrustDomain: "evil.local", Namespace: "shop", ServiceAccount: "legacy"}
			return []byte(b.Token()), id, csrFor(t, h.key, id)
		}, codes.PermissionDenied, metrics.ReasonIdentityMismatch, false},
		{"workload missing", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			if err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Delete(context.Background(), "legacy", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			return []byte(b.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonUnknownIdentity, false},
		{"workload being deleted", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			ew := h.workload("legacy")
			now := metav1.NewTime(h.clock())
			ew.DeletionTimestamp, ew.Finalizers = &now, []string{"example.com/keep"}
			if _, err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Update(context.Background(), ew, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			return []byte(b.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonUnknownIdentity, false},
		{"expiry written past the longest TTL", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			s, _ := h.kube.CoreV1().Secrets(cpNS).Get(context.Background(), ewsecret.Name(b.Hash()), metav1.GetOptions{})
			s.CreationTimestamp = metav1.NewTime(h.clock().Add(-ewsecret.MaxTTL - 2*time.Minute))
			s.Data[ewsecret.KeyExpiry] = []byte("9999-12-31T00:00:00Z")
			if _, err := h.kube.CoreV1().Secrets(cpNS).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			return []byte(b.Token()), legacyID, csrFor(t, h.key, legacyID)
		}, codes.Unauthenticated, metrics.ReasonBadToken, true},
		{"workload in the control plane's namespace", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			ctrl := identity.ID{TrustDomain: "cluster.local", Namespace: cpNS, ServiceAccount: "trellis-controller"}
			ew := &wlv1.ExternalWorkload{ObjectMeta: metav1.ObjectMeta{Name: "ctrl", Namespace: cpNS},
				Spec: wlv1.ExternalWorkloadSpec{ServiceAccount: ctrl.ServiceAccount, Addresses: []wlv1.WorkloadAddress{{IP: "172.31.254.3"}}}}
			if _, err := h.wl.WorkloadV1alpha1().ExternalWorkloads(cpNS).Create(context.Background(), ew, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			tok, _, err := ewsecret.Mint(context.Background(), h.kube.CoreV1(), cpNS, cpNS, "ctrl", time.Hour, h.clock())
			if err != nil {
				t.Fatal(err)
			}
			return []byte(tok.Token()), ctrl, csrFor(t, h.key, ctrl)
		}, codes.PermissionDenied, metrics.ReasonIdentityMismatch, false},
		{"invalid CSR", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			return []byte(b.Token()), legacyID, []byte("junk")
		}, codes.InvalidArgument, metrics.ReasonBadCSR, false},
		{"CSR of another identity", func(h *harness, b ewtoken.Bootstrap) ([]byte, identity.ID, []byte) {
			return []byte(b.Token()), legacyID, csrFor(t, other, identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "x"})
		}, codes.InvalidArgument, metrics.ReasonBadCSR, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			b := h.mint("legacy", time.Hour)
			token, id, csr := tc.setup(h, b)
			_, err := h.svc.Certify(context.Background(), &apiv1.CertifyRequest{Identity: id.String(), Token: token, CertificateSigningRequest: csr})
			h.wantRefused(err, tc.code, tc.reason)
			if got := h.secretExists(b); got == tc.spent {
				t.Errorf("token Secret exists: %v, want %v", got, !tc.spent)
			}
			if s := status.Convert(err).Message(); len(token) > 20 && strings.Contains(s, string(token[len(token)-20:])) {
				t.Errorf("refusal %q holds the token", s)
			}
			if ew, err := h.wl.WorkloadV1alpha1().ExternalWorkloads("shop").Get(context.Background(), "legacy", metav1.GetOptions{}); err == nil && ew.Status.KeySHA256 != "" {
				t.Errorf("a refused call wrote status.keySHA256 %q", ew.Status.KeySHA256)
			}
		})
	}
}

// TestBootstrapConcurrentRedeem: of callers racing with one token, exactly
// one gets through.
func TestBootstrapConcurrentRedeem(t *testing.T) {
	h := newHarness(t)
	b := h.mint("legacy", time.Hour)
	const callers = 8
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = h.auth.Authenticate(context.Background(), identitysvc.Request{Token: []byte(b.Token()), ID: legacyID, PublicKey: h.key.Public()})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		var ae *identitysvc.AuthError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &ae) && ae.Reason == metrics.ReasonBadToken:
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d callers redeemed the token, want exactly 1", ok)
	}
}

// TestDeleteIsConditional: a Secret changed since it was read is not
// deleted, and the caller may retry.
func TestDeleteIsConditional(t *testing.T) {
	h := newHarness(t)
	b := h.mint("legacy", time.Hour)
	s, err := h.kube.CoreV1().Secrets(cpNS).Get(context.Background(), ewsecret.Name(b.Hash()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stale := s.DeepCopy()
	stale.ResourceVersion += "-stale"
	if err := h.auth.deleteSecret(context.Background(), stale, deletedRedeemed); !errors.Is(err, identitysvc.ErrAuthUnavailable) {
		t.Errorf("stale delete: %v, want ErrAuthUnavailable", err)
	}
	if !h.secretExists(b) {
		t.Error("a stale delete deleted the Secret")
	}
}

func TestBootstrapStatusFailureRefuses(t *testing.T) {
	h := newHarness(t)
	h.wl.PrependReactor("update", "externalworkloads", func(a ktesting.Action) (bool, runtime.Object, error) {
		return a.GetSubresource() == "status", nil, errors.New("etcd is down")
	})
	_, err := h.certify([]byte(h.mint("legacy", time.Hour).Token()), legacyID, h.key, nil)
	h.wantRefused(err, codes.Unavailable, metrics.ReasonInternal)
	if n := testutil.ToFloat64(h.auth.m.statusErrors); n != 1 {
		t.Errorf("status errors = %v, want 1", n)
	}
	if n := testutil.ToFloat64(h.m.CertificatesIssued); n != 0 {
		t.Errorf("issued = %v, want 0", n)
	}
}

func TestOtherTokensGoToNext(t *testing.T) {
	h := newHarness(t)
	if _, err := h.certify([]byte("eyJhbGciOiJSUzI1NiJ9.x.y"), legacyID, h.key, nil); err != nil {
		t.Fatal(err)
	}
	if h.next.calls != 1 {
		t.Errorf("Next called %d times, want 1", h.next.calls)
	}
}

func TestSweep(t *testing.T) {
	h := newHarness(t)
	old := h.mint("legacy", time.Hour)
	h.advance(50 * time.Minute)
	fresh := h.mint("legacy", time.Hour)
	h.advance(20 * time.Minute) // old expired 10 minutes ago
	if _, err := h.kube.CoreV1().Secrets(cpNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Labels: map[string]string{ewsecret.LabelToken: "true"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := h.auth.Sweep(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1, nil", n, err)
	}
	if h.secretExists(old) || !h.secretExists(fresh) {
		t.Errorf("after the sweep: expired token there %v, fresh there %v", h.secretExists(old), h.secretExists(fresh))
	}
	if _, err := h.kube.CoreV1().Secrets(cpNS).Get(context.Background(), "unrelated", metav1.GetOptions{}); err != nil {
		t.Errorf("the sweep deleted a Secret it did not write: %v", err)
	}
}
