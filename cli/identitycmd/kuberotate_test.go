package identitycmd

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/trellis-mesh/trellis/internal/pki"
)

var kubeNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

type kubeFixture struct {
	anchor    *x509.Certificate
	issuer    *pki.Issuer
	secret    *corev1.Secret
	cm        *corev1.ConfigMap
	client    *fake.Clientset
	anchorDir string
}

func newKubeFixture(t *testing.T, labelled bool) *kubeFixture {
	t.Helper()
	anchor, key, err := pki.NewRoot("old-anchor", 24*time.Hour*365, kubeNow.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewTrustDomainIssuer(anchor, key, "old-issuer", "cluster.local", 24*time.Hour*30, kubeNow.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	if labelled {
		labels[labelPartOf] = labelPartOfValue
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: kubeIssuerSecret, Namespace: "trellis-system", Labels: labels},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			kubeSecretCert: pki.EncodeCertsPEM(is.Cert), kubeSecretKey: keyPEM, kubeSecretCA: pki.EncodeCertsPEM(anchor),
		},
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: kubeAnchorsCM, Namespace: "trellis-system"},
		Data:       map[string]string{kubeCMKey: string(pki.EncodeCertsPEM(anchor))},
	}
	return &kubeFixture{
		anchor: anchor, issuer: is, secret: sec, cm: cm,
		client: fake.NewClientset(sec, cm), anchorDir: filepath.Join(t.TempDir(), "anchor"),
	}
}

func (f *kubeFixture) rot() *kubeRotation {
	return &kubeRotation{client: f.client, namespace: "trellis-system", anchorDir: f.anchorDir}
}

func (f *kubeFixture) run(t *testing.T, stage string, check func(*rotationState, string) error) (string, error) {
	t.Helper()
	k := f.rot()
	s, err := k.load(context.Background())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	o := kubeOptions{rotateOptions: rotateOptions{
		anchorValidity: 24 * time.Hour * 365, issuerValidity: 24 * time.Hour * 30,
		issuerName: defaultIssuerName, now: kubeNow, checkProxies: check,
	}, trustDomain: "cluster.local"}
	var out bytes.Buffer
	err = k.runStage(context.Background(), s, stage, o, &out)
	return out.String(), err
}

func (f *kubeFixture) cluster(t *testing.T) (bundle, cmBundle, chain []*x509.Certificate) {
	t.Helper()
	ctx := context.Background()
	sec, err := f.client.CoreV1().Secrets("trellis-system").Get(ctx, kubeIssuerSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := f.client.CoreV1().ConfigMaps("trellis-system").Get(ctx, kubeAnchorsCM, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range sec.Data {
		if bytes.Contains(v, []byte("PRIVATE KEY")) && !bytes.Equal(v, sec.Data[kubeSecretKey]) {
			t.Fatal("a private key other than tls.key is in the Secret")
		}
	}
	bundle, _ = pki.ParseCertsPEM(sec.Data[kubeSecretCA])
	cmBundle, _ = pki.ParseCertsPEM([]byte(cm.Data[kubeCMKey]))
	chain, _ = pki.ParseCertsPEM(sec.Data[kubeSecretCert])
	return bundle, cmBundle, chain
}

func allReady(*rotationState, string) error { return nil }

// TestKubeRotateStages walks the three stages against an in-memory API
// (the e2e suite identity-anchor does it on a real cluster under load).
func TestKubeRotateStages(t *testing.T) {
	f := newKubeFixture(t, true)
	if _, err := f.run(t, StageSwitchIssuer, allReady); err == nil || !strings.Contains(err.Error(), "add-anchor first") {
		t.Fatalf("switch-issuer first: %v", err)
	}
	out, err := f.run(t, StageAddAnchor, allReady)
	if err != nil {
		t.Fatalf("add-anchor: %v\n%s", err, out)
	}
	bundle, cmBundle, _ := f.cluster(t)
	if len(bundle) != 2 || pki.Fingerprint(bundle) != pki.Fingerprint(cmBundle) || !pki.BundleContains(bundle, f.anchor) {
		t.Fatalf("after add-anchor: Secret bundle %d anchors, ConfigMap equal %v", len(bundle), pki.Fingerprint(bundle) == pki.Fingerprint(cmBundle))
	}
	for path, want := range map[string]os.FileMode{f.anchorDir: 0o700, join(f.anchorDir, nextAnchorKeyFile): 0o600} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, st.Mode().Perm(), err, want)
		}
	}
	if out, err := f.run(t, StageAddAnchor, allReady); !errors.Is(err, errAlreadyDone) {
		t.Errorf("add-anchor again: %v\n%s", err, out)
	}
	if _, err := f.run(t, StageRemoveOld, allReady); err == nil || !strings.Contains(err.Error(), "switch-issuer first") {
		t.Errorf("remove-old before switch-issuer: %v", err)
	}
	notReady := func(_ *rotationState, stage string) error {
		return errors.New("1 of 1 proxies not ready: proxy ns/p: " + stage)
	}
	if _, err := f.run(t, StageSwitchIssuer, notReady); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("switch-issuer with a proxy not ready: %v", err)
	}
	if _, _, chain := f.cluster(t); chain[0].CheckSignatureFrom(f.anchor) != nil {
		t.Error("a refused switch-issuer changed the issuer")
	}
	if out, err := f.run(t, StageSwitchIssuer, allReady); err != nil {
		t.Fatalf("switch-issuer: %v\n%s", err, out)
	}
	newAnchor, err := readCert(join(f.anchorDir, anchorCertFile))
	if err != nil {
		t.Fatal(err)
	}
	bundle2, _, chain := f.cluster(t)
	if chain[0].CheckSignatureFrom(newAnchor) != nil || pki.Fingerprint(bundle2) != pki.Fingerprint(bundle) {
		t.Errorf("after switch-issuer: issuer not signed by the new anchor, or the bundle changed")
	}
	if ok, _ := exists(join(f.anchorDir, nextAnchorKeyFile)); ok {
		t.Error("anchor.next.key left after switch-issuer")
	}
	if _, err := f.run(t, StageRemoveOld, notReady); err == nil {
		t.Error("remove-old with a proxy not ready went through")
	}
	if out, err := f.run(t, StageRemoveOld, allReady); err != nil {
		t.Fatalf("remove-old: %v\n%s", err, out)
	}
	bundle3, cm3, _ := f.cluster(t)
	if len(bundle3) != 1 || pki.CertFingerprint(bundle3[0]) != pki.CertFingerprint(newAnchor) || pki.Fingerprint(cm3) != pki.Fingerprint(bundle3) {
		t.Errorf("after remove-old: Secret %d anchors, ConfigMap equal %v", len(bundle3), pki.Fingerprint(cm3) == pki.Fingerprint(bundle3))
	}
	if _, err := f.run(t, StageRemoveOld, allReady); !errors.Is(err, errAlreadyDone) {
		t.Errorf("remove-old again: %v", err)
	}
}

// TestKubeRotateExternalSecret rotates with an issuer Secret owned by an
// external CA: only the ConfigMap is written, switch-issuer refuses and says
// what to do, and the "external CA" (the test) switches the issuer, writing
// ca.crt with the new anchor alone as cert-manager does.
func TestKubeRotateExternalSecret(t *testing.T) {
	f := newKubeFixture(t, false)
	secretRV := func() string {
		t.Helper()
		sec, err := f.client.CoreV1().Secrets("trellis-system").Get(context.Background(), kubeIssuerSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sec.ResourceVersion
	}
	rv := secretRV()
	if out, err := f.run(t, StageAddAnchor, allReady); err != nil {
		t.Fatalf("add-anchor: %v\n%s", err, out)
	}
	next, err := readCert(join(f.anchorDir, nextAnchorCertFile))
	if err != nil {
		t.Fatal(err)
	}
	bundle, cmBundle, _ := f.cluster(t)
	if len(bundle) != 1 || len(cmBundle) != 2 || !pki.BundleContains(cmBundle, next) || !pki.BundleContains(cmBundle, f.anchor) {
		t.Fatalf("after add-anchor: Secret ca.crt %d anchors (want it untouched), ConfigMap %d", len(bundle), len(cmBundle))
	}
	if out, err := f.run(t, StageAddAnchor, allReady); !errors.Is(err, errAlreadyDone) {
		t.Errorf("add-anchor again: %v\n%s", err, out)
	}
	notReady := func(_ *rotationState, stage string) error { return errors.New("1 of 1 proxies not ready: " + stage) }
	for _, tc := range []struct {
		check func(*rotationState, string) error
		want  string
	}{{allReady, "may switch now"}, {notReady, "do not switch yet"}} {
		_, err := f.run(t, StageSwitchIssuer, tc.check)
		if err == nil || !strings.Contains(err.Error(), "external CA") || !strings.Contains(err.Error(), nextAnchorKeyFile) ||
			!strings.Contains(err.Error(), "remove-old") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("switch-issuer on an external Secret: %v", err)
		}
	}
	if _, err := f.run(t, StageRemoveOld, allReady); err == nil || !strings.Contains(err.Error(), "switch-issuer") {
		t.Errorf("remove-old before the external CA switched: %v", err)
	}
	if got := secretRV(); got != rv {
		t.Fatal("the external Secret was written")
	}

	// The external CA switches: issuer from the new anchor, ca.crt = it.
	nextKey, err := readKey(join(f.anchorDir, nextAnchorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewTrustDomainIssuer(next, nextKey, "cm-issuer", "cluster.local", 24*time.Hour, kubeNow)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		t.Fatal(err)
	}
	sec := f.secret.DeepCopy()
	sec.ResourceVersion = ""
	sec.Data = map[string][]byte{kubeSecretCert: pki.EncodeCertsPEM(is.Cert), kubeSecretKey: keyPEM, kubeSecretCA: pki.EncodeCertsPEM(next)}
	if _, err := f.client.CoreV1().Secrets("trellis-system").Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rv = secretRV()
	if out, err := f.run(t, StageSwitchIssuer, allReady); !errors.Is(err, errAlreadyDone) {
		t.Errorf("switch-issuer after the external CA switched: %v\n%s", err, out)
	}
	if _, err := f.run(t, StageRemoveOld, notReady); err == nil {
		t.Error("remove-old with a proxy not ready went through")
	}
	if out, err := f.run(t, StageRemoveOld, allReady); err != nil {
		t.Fatalf("remove-old: %v\n%s", err, out)
	}
	_, cmBundle, _ = f.cluster(t)
	if len(cmBundle) != 1 || !cmBundle[0].Equal(next) {
		t.Fatalf("after remove-old: ConfigMap holds %d anchors, want the new one alone", len(cmBundle))
	}
	if a, err := readCert(join(f.anchorDir, anchorCertFile)); err != nil || !a.Equal(next) {
		t.Errorf("anchor.crt is not the new anchor after remove-old: %v", err)
	}
	if ok, _ := exists(join(f.anchorDir, nextAnchorKeyFile)); ok {
		t.Error("anchor.next.key left after remove-old")
	}
	if _, err := f.run(t, StageRemoveOld, allReady); !errors.Is(err, errAlreadyDone) {
		t.Errorf("remove-old again: %v", err)
	}
	if got := secretRV(); got != rv {
		t.Fatal("the external Secret was written")
	}
}

func TestClassifyKube(t *testing.T) {
	f := newKubeFixture(t, true)
	next, nextKey, err := pki.NewRoot("next", 24*time.Hour*365, kubeNow)
	if err != nil {
		t.Fatal(err)
	}
	nextIssuer, err := pki.NewIssuer(next, nextKey, "next-issuer", time.Hour*24, kubeNow)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _, err := pki.NewRoot("stranger", time.Hour*24, kubeNow)
	if err != nil {
		t.Fatal(err)
	}
	with := func(cert []*x509.Certificate, bundle, cm []*x509.Certificate) (*corev1.Secret, *corev1.ConfigMap) {
		s := f.secret.DeepCopy()
		s.Data[kubeSecretCert] = pki.EncodeCertsPEM(cert...)
		s.Data[kubeSecretCA] = pki.EncodeCertsPEM(bundle...)
		c := f.cm.DeepCopy()
		c.Data[kubeCMKey] = string(pki.EncodeCertsPEM(cm...))
		return s, c
	}
	old, both := []*x509.Certificate{f.anchor}, []*x509.Certificate{f.anchor, next}
	tests := []struct {
		name                             string
		issuer                           *x509.Certificate
		bundle, cm                       []*x509.Certificate
		next                             bool
		phase                            phase
		addPartial, switchPartial, stale bool
		external, externalSwitched       bool
		wantErr                          string
	}{
		{name: "idle", issuer: f.issuer.Cert, bundle: old, cm: old, phase: phaseIdle},
		{name: "next written, not in the bundle", issuer: f.issuer.Cert, bundle: old, cm: old, next: true, phase: phaseAdded, addPartial: true},
		{name: "next in the Secret only", issuer: f.issuer.Cert, bundle: both, cm: old, next: true, phase: phaseAdded, addPartial: true, stale: true},
		{name: "added", issuer: f.issuer.Cert, bundle: both, cm: both, next: true, phase: phaseAdded},
		{name: "switch interrupted", issuer: nextIssuer.Cert, bundle: both, cm: both, next: true, phase: phaseAdded, switchPartial: true},
		{name: "switched", issuer: nextIssuer.Cert, bundle: both, cm: both, phase: phaseSwitched},
		{name: "removed, ConfigMap behind", issuer: nextIssuer.Cert, bundle: []*x509.Certificate{next}, cm: both, phase: phaseIdle, stale: true},
		{name: "issuer of no anchor", issuer: f.issuer.Cert, bundle: []*x509.Certificate{stranger}, cm: old, wantErr: "does not chain"},
		// External Secret: ca.crt holds the issuer's CA alone and is
		// ignored; the ConfigMap is the bundle.
		{name: "external idle", external: true, issuer: f.issuer.Cert, bundle: old, cm: old, phase: phaseIdle},
		{name: "external, next not in the ConfigMap", external: true, issuer: f.issuer.Cert, bundle: old, cm: old, next: true, phase: phaseAdded, addPartial: true},
		{name: "external added", external: true, issuer: f.issuer.Cert, bundle: old, cm: both, next: true, phase: phaseAdded},
		{name: "external CA switched", external: true, issuer: nextIssuer.Cert, bundle: []*x509.Certificate{next}, cm: both, next: true, phase: phaseSwitched, externalSwitched: true},
		{name: "external switched, no anchor-dir", external: true, issuer: nextIssuer.Cert, bundle: []*x509.Certificate{next}, cm: both, phase: phaseSwitched},
		{name: "external removed", external: true, issuer: nextIssuer.Cert, bundle: []*x509.Certificate{next}, cm: []*x509.Certificate{next}, phase: phaseIdle},
		{name: "external switched too early", external: true, issuer: nextIssuer.Cert, bundle: []*x509.Certificate{next}, cm: old, next: true, wantErr: "add-anchor"},
		{name: "external, empty ConfigMap", external: true, issuer: f.issuer.Cert, bundle: old, wantErr: kubeCMKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sec, cm := with([]*x509.Certificate{tc.issuer}, tc.bundle, tc.cm)
			if tc.external {
				sec.Labels = nil
			}
			var n *x509.Certificate
			if tc.next {
				n = next
			}
			s, err := classifyKube(sec, cm, n, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.phase != tc.phase || s.addPartial != tc.addPartial || s.switchPartial != tc.switchPartial || s.cmStale != tc.stale || s.externalSwitched != tc.externalSwitched {
				t.Errorf("phase %v add %v switch %v stale %v external-switched %v; want %v %v %v %v %v", s.phase, s.addPartial, s.switchPartial, s.cmStale, s.externalSwitched,
					tc.phase, tc.addPartial, tc.switchPartial, tc.stale, tc.externalSwitched)
			}
		})
	}
	if _, err := classifyKube(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, nil, nil, nil); err == nil {
		t.Error("an empty Secret was accepted")
	}
}

// FuzzClassifyKube: whatever the Secret and ConfigMap hold, classifying
// them returns a state or an error, never panics.
func FuzzClassifyKube(f *testing.F) {
	anchor, key, err := pki.NewRoot("a", time.Hour, kubeNow)
	if err != nil {
		f.Fatal(err)
	}
	is, err := pki.NewIssuer(anchor, key, "i", time.Hour, kubeNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pki.EncodeCertsPEM(is.Cert), pki.EncodeCertsPEM(anchor), string(pki.EncodeCertsPEM(anchor)), true)
	f.Add(pki.EncodeCertsPEM(is.Cert), []byte{}, string(pki.EncodeCertsPEM(anchor)), false)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{}, "x", false)
	f.Fuzz(func(t *testing.T, cert, ca []byte, cm string, labelled bool) {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kubeIssuerSecret}, Data: map[string][]byte{kubeSecretCert: cert, kubeSecretCA: ca}}
		if labelled {
			sec.Labels = map[string]string{labelPartOf: labelPartOfValue}
		}
		c := &corev1.ConfigMap{Data: map[string]string{kubeCMKey: cm}}
		s, err := classifyKube(sec, c, anchor, nil)
		if err == nil && (s.anchor == nil || s.issuer == nil) {
			t.Fatal("a state without anchor or issuer")
		}
	})
}
