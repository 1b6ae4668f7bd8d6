package identitycmd

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// The cluster objects a Kubernetes rotation changes (docs/install.md).
const (
	kubeIssuerSecret = "trellis-identity-issuer" // tls.crt, tls.key, ca.crt
	kubeAnchorsCM    = "trellis-trust-anchors"   // ca-bundle.crt: the bundle the controller serves (--trust-anchors-file)
	kubeCMKey        = "ca-bundle.crt"
	kubeSecretCert   = "tls.crt"
	kubeSecretKey    = "tls.key"
	kubeSecretCA     = "ca.crt"
	// labelPartOf marks what Trellis installed: a Secret without it is
	// someone else's (cert-manager) and is never written.
	labelPartOf      = "app.kubernetes.io/part-of"
	labelPartOfValue = "trellis"
	proxyAdminPort   = "4191"
	proxyMetricsPath = "metrics"
)

// kubeState is an anchor rotation as the cluster objects and the local
// --anchor-dir show it.
//
// Contract: the controller serves the ConfigMap's ca-bundle.crt. With a
// Trellis-labelled Secret, its ca.crt is the reference bundle and the
// ConfigMap follows it (both are written). With an external Secret
// (cert-manager writes ca.crt with the issuer's CA alone) the ConfigMap is
// the bundle and the only object written: the external CA switches the
// issuer. The anchor-dir holds anchor.next.crt/key (the new anchor and its
// key, which never go to the cluster) from add-anchor until an issuer
// signed by it is in the Secret (switch-issuer, or remove-old once the
// external CA switched); then they become anchor.crt/key.
type kubeState struct {
	namespace string
	anchorDir string // "" for --status without --anchor-dir
	external  bool   // the Secret is not Trellis-labelled
	issuer    *x509.Certificate
	issuerKey []byte
	bundle    []*x509.Certificate // Secret ca.crt; the ConfigMap's when external
	cmBundle  []*x509.Certificate // ConfigMap ca-bundle.crt
	anchor    *x509.Certificate   // the anchor of bundle the issuer chains to
	next      *x509.Certificate
	nextKey   crypto.Signer

	phase         phase
	addPartial    bool // next exists but is not in both bundles yet
	switchPartial bool // the issuer is next's; the anchor-dir files are not renamed yet (Trellis-managed)
	// externalSwitched: the external CA switched to next's issuer; the
	// anchor-dir files are renamed by remove-old.
	externalSwitched bool
	cmStale          bool // the ConfigMap's bundle differs from the Secret's

	secret *corev1.Secret
	cm     *corev1.ConfigMap
}

// bundleObjects names what holds the bundle, for messages.
func (s *kubeState) bundleObjects() string {
	if s.external {
		return fmt.Sprintf("%s/%s (%s)", s.namespace, kubeAnchorsCM, kubeCMKey)
	}
	return fmt.Sprintf("%s/%s (%s) and %s/%s (%s)", s.namespace, kubeIssuerSecret, kubeSecretCA, s.namespace, kubeAnchorsCM, kubeCMKey)
}

// old returns the anchors of the bundle other than the issuer's and next.
func (s *kubeState) old() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range s.bundle {
		if pki.CertFingerprint(c) != pki.CertFingerprint(s.anchor) && (s.next == nil || pki.CertFingerprint(c) != pki.CertFingerprint(s.next)) {
			out = append(out, c)
		}
	}
	return out
}

// asRotation is the view proxyReady decides on.
func (s *kubeState) asRotation() *rotationState {
	return &rotationState{anchor: s.anchor, issuer: s.issuer, bundle: s.bundle}
}

// classifyKube is the pure part: what the Secret, the ConfigMap and the
// anchor-dir's next anchor (may be nil) say about the rotation.
func classifyKube(secret *corev1.Secret, cm *corev1.ConfigMap, next *x509.Certificate, nextKey crypto.Signer) (*kubeState, error) {
	s := &kubeState{secret: secret, cm: cm, next: next, nextKey: nextKey}
	ref := secret.Namespace + "/" + secret.Name
	s.external = secret.Labels[labelPartOf] != labelPartOfValue
	chain, err := pki.ParseCertsPEM(secret.Data[kubeSecretCert])
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("issuer Secret %s: %s: no certificate (%v)", ref, kubeSecretCert, err)
	}
	s.issuer, s.issuerKey = chain[0], secret.Data[kubeSecretKey]
	if cm != nil {
		if s.cmBundle, err = pki.ParseCertsPEM([]byte(cm.Data[kubeCMKey])); err != nil {
			return nil, fmt.Errorf("ConfigMap %s/%s: %s: %w", cm.Namespace, cm.Name, kubeCMKey, err)
		}
	}
	bundleName := kubeSecretCA
	if s.external {
		// ca.crt is the external CA's business: the bundle is the ConfigMap.
		if len(s.cmBundle) == 0 {
			return nil, fmt.Errorf("ConfigMap %s/%s: %s holds no anchor; with an external issuer Secret it is the trust bundle", secret.Namespace, kubeAnchorsCM, kubeCMKey)
		}
		s.bundle, bundleName = s.cmBundle, kubeAnchorsCM+" "+kubeCMKey
	} else if s.bundle, err = pki.ParseCertsPEM(secret.Data[kubeSecretCA]); err != nil || len(s.bundle) == 0 {
		return nil, fmt.Errorf("issuer Secret %s: %s: no trust bundle (%v)", ref, kubeSecretCA, err)
	}
	s.cmStale = pki.Fingerprint(s.cmBundle) != pki.Fingerprint(s.bundle)
	top := chain[len(chain)-1]
	for _, c := range s.bundle {
		if pki.CertFingerprint(c) == pki.CertFingerprint(top) || top.CheckSignatureFrom(c) == nil {
			s.anchor = c
			break
		}
	}
	if s.anchor == nil {
		if s.external {
			return nil, fmt.Errorf("issuer Secret %s: the issuer %q does not chain to any anchor of %s: the controller refuses it and keeps serving its previous issuer; "+
				"add the issuer's anchor to the bundle (add-anchor) before switching the external CA to it", ref, s.issuer.Subject.CommonName, bundleName)
		}
		return nil, fmt.Errorf("issuer Secret %s: the issuer %q does not chain to any anchor of %s: the Secret is inconsistent (inspect it with trellis identity inspect)",
			ref, s.issuer.Subject.CommonName, bundleName)
	}
	if next != nil && nextKey != nil {
		if err := pki.KeyMatchesCert(nextKey, next); err != nil {
			return nil, fmt.Errorf("%s and %s: %w", nextAnchorCertFile, nextAnchorKeyFile, err)
		}
	}
	switch {
	case next != nil && pki.CertFingerprint(s.anchor) == pki.CertFingerprint(next) && s.external:
		s.phase, s.externalSwitched = phaseSwitched, true
	case next != nil && pki.CertFingerprint(s.anchor) == pki.CertFingerprint(next):
		s.phase, s.switchPartial = phaseAdded, true
	case next != nil:
		s.phase = phaseAdded
		s.addPartial = !pki.BundleContains(s.bundle, next) || !pki.BundleContains(s.cmBundle, next)
	case len(s.bundle) > 1:
		s.phase = phaseSwitched
	default:
		s.phase = phaseIdle
	}
	return s, nil
}

// kubeRotation is the cluster and local files a stage works on.
type kubeRotation struct {
	client    kubernetes.Interface
	namespace string
	anchorDir string
}

func (k *kubeRotation) load(ctx context.Context) (*kubeState, error) {
	secret, err := k.client.CoreV1().Secrets(k.namespace).Get(ctx, kubeIssuerSecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read Secret %s/%s: %w", k.namespace, kubeIssuerSecret, err)
	}
	cm, err := k.client.CoreV1().ConfigMaps(k.namespace).Get(ctx, kubeAnchorsCM, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read ConfigMap %s/%s: %w", k.namespace, kubeAnchorsCM, err)
	}
	var next *x509.Certificate
	var nextKey crypto.Signer
	if k.anchorDir != "" {
		ok, err := exists(join(k.anchorDir, nextAnchorCertFile))
		if err != nil {
			return nil, err
		}
		if ok {
			if next, err = readCert(join(k.anchorDir, nextAnchorCertFile)); err != nil {
				return nil, err
			}
			if nextKey, err = readKey(join(k.anchorDir, nextAnchorKeyFile)); err != nil {
				return nil, fmt.Errorf("%s exists but its key does not: %w", nextAnchorCertFile, err)
			}
		}
	}
	s, err := classifyKube(secret, cm, next, nextKey)
	if err != nil {
		return nil, err
	}
	s.namespace, s.anchorDir = k.namespace, k.anchorDir
	return s, nil
}

// kubeOptions are the stage inputs besides the cluster.
type kubeOptions struct {
	rotateOptions
	trustDomain string
}

func (k *kubeRotation) runStage(ctx context.Context, s *kubeState, stage string, o kubeOptions, w io.Writer) error {
	if s.external && stage == StageSwitchIssuer {
		return k.externalSwitch(s, o, w)
	}
	switch stage {
	case StageAddAnchor:
		return k.addAnchor(ctx, s, o, w)
	case StageSwitchIssuer:
		return k.switchIssuer(ctx, s, o, w)
	case StageRemoveOld:
		return k.removeOld(ctx, s, o, w)
	default:
		return fmt.Errorf("--stage %q: want %s, %s or %s", stage, StageAddAnchor, StageSwitchIssuer, StageRemoveOld)
	}
}

// writeBundle puts bundle into the Secret's ca.crt (what proxies get) and
// then the ConfigMap, each only when it differs. Updates carry the
// resourceVersion read, so a concurrent writer makes this fail, not lose
// its change.
func (k *kubeRotation) writeBundle(ctx context.Context, s *kubeState, bundle []*x509.Certificate) error {
	// An external Secret is never written: its CA owns ca.crt.
	if !s.external && pki.Fingerprint(s.bundle) != pki.Fingerprint(bundle) {
		sec := s.secret.DeepCopy()
		sec.Data[kubeSecretCA] = pki.EncodeCertsPEM(bundle...)
		updated, err := k.client.CoreV1().Secrets(k.namespace).Update(ctx, sec, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update Secret %s/%s: %w", k.namespace, kubeIssuerSecret, err)
		}
		s.secret, s.bundle = updated, bundle
	}
	if pki.Fingerprint(s.cmBundle) != pki.Fingerprint(bundle) {
		cm := s.cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[kubeCMKey] = string(pki.EncodeCertsPEM(bundle...))
		updated, err := k.client.CoreV1().ConfigMaps(k.namespace).Update(ctx, cm, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update ConfigMap %s/%s: %w", k.namespace, kubeAnchorsCM, err)
		}
		s.cm, s.cmBundle = updated, bundle
	}
	if s.external {
		s.bundle = bundle
	}
	s.cmStale = false
	return nil
}

func (k *kubeRotation) addAnchor(ctx context.Context, s *kubeState, o kubeOptions, w io.Writer) error {
	switch {
	case s.phase == phaseSwitched:
		if err := k.writeBundle(ctx, s, s.bundle); err != nil {
			return err
		}
		fmt.Fprintf(w, "add-anchor: already done (the new anchor %q is in use); next stage: remove-old\n", s.anchor.Subject.CommonName)
		return errAlreadyDone
	case s.phase == phaseAdded && s.switchPartial:
		fmt.Fprintln(w, "add-anchor: already done; switch-issuer was interrupted: run --stage switch-issuer again")
		return errAlreadyDone
	case s.phase == phaseAdded && !s.addPartial:
		if err := k.writeBundle(ctx, s, s.bundle); err != nil {
			return err
		}
		fmt.Fprintf(w, "add-anchor: already done (%q is in %s and %s); next stage: switch-issuer\n", s.next.Subject.CommonName, kubeIssuerSecret, kubeAnchorsCM)
		return errAlreadyDone
	case s.phase == phaseIdle:
		if err := makeOutDir(s.anchorDir); err != nil {
			return err
		}
		// The key is on local disk before the cluster trusts its anchor.
		cert, key, err := createNextAnchor(s.anchorDir, o.anchorName, o.anchorValidity, o.now)
		if err != nil {
			return err
		}
		s.next, s.nextKey = cert, key
	}
	bundle, _ := pki.AddToBundle(s.bundle, []*x509.Certificate{s.next})
	if err := k.writeBundle(ctx, s, bundle); err != nil {
		return err
	}
	s.phase, s.addPartial = phaseAdded, false
	fmt.Fprintf(w, "add-anchor: done. New anchor %q (SHA-256 %s); its key is only in %s\n",
		s.next.Subject.CommonName, pki.CertFingerprint(s.next), join(s.anchorDir, nextAnchorKeyFile))
	fmt.Fprintf(w, "  %s: %d anchors now, fingerprint %s\n", s.bundleObjects(), len(bundle), pki.Fingerprint(bundle))
	if s.external {
		fmt.Fprintln(w, "  next: wait until every proxy reports this bundle fingerprint (they get it on their next certificate renewal), then switch the issuer in the external CA (run --stage switch-issuer for how and whether the proxies are ready)")
	} else {
		fmt.Fprintln(w, "  next: wait until every proxy reports this bundle fingerprint (they get it on their next certificate renewal), then run --stage switch-issuer")
	}
	return nil
}

func (k *kubeRotation) switchIssuer(ctx context.Context, s *kubeState, o kubeOptions, w io.Writer) error {
	switch s.phase {
	case phaseIdle:
		return fmt.Errorf("switch-issuer: refused: no new anchor is pending (%s is not in %s); run --stage add-anchor first", nextAnchorCertFile, s.anchorDir)
	case phaseSwitched:
		fmt.Fprintf(w, "switch-issuer: already done (issuer %q is signed by anchor %q); next stage: remove-old\n",
			s.issuer.Subject.CommonName, s.anchor.Subject.CommonName)
		return errAlreadyDone
	}
	if s.addPartial {
		return fmt.Errorf("switch-issuer: refused: the new anchor is not in both %s and %s yet (add-anchor was interrupted); run --stage add-anchor again", kubeIssuerSecret, kubeAnchorsCM)
	}
	if !s.switchPartial {
		if err := o.checkProxies(s.asRotation(), StageSwitchIssuer); err != nil {
			return fmt.Errorf("switch-issuer: refused: %w", err)
		}
		is, err := pki.NewTrustDomainIssuer(s.next, s.nextKey, o.issuerName, o.trustDomain, o.issuerValidity, o.now)
		if err != nil {
			return err
		}
		keyPEM, err := pki.EncodeKeyPEM(is.Key)
		if err != nil {
			return err
		}
		// One update: the controller never sees the new certificate with
		// the old key. The bundle is unchanged.
		sec := s.secret.DeepCopy()
		sec.Data[kubeSecretCert] = pki.EncodeCertsPEM(append([]*x509.Certificate{is.Cert}, is.Chain...)...)
		sec.Data[kubeSecretKey] = keyPEM
		updated, err := k.client.CoreV1().Secrets(k.namespace).Update(ctx, sec, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("update Secret %s/%s: %w", k.namespace, kubeIssuerSecret, err)
		}
		s.secret, s.issuer = updated, is.Cert
	}
	if err := promoteNext(s, StageSwitchIssuer); err != nil {
		return err
	}
	s.phase, s.switchPartial = phaseSwitched, false
	fmt.Fprintf(w, "switch-issuer: done. New issuer %q (SHA-256 %s) signed by anchor %q, valid until %s, written to %s/%s\n",
		s.issuer.Subject.CommonName, pki.CertFingerprint(s.issuer), s.anchor.Subject.CommonName, s.issuer.NotAfter.UTC().Format(time.RFC3339), s.namespace, kubeIssuerSecret)
	fmt.Fprintf(w, "  the new anchor and its key are now %s and %s\n", join(s.anchorDir, anchorCertFile), join(s.anchorDir, anchorKeyFile))
	fmt.Fprintln(w, "  next: wait until every proxy has renewed its certificate (trellis_identity_cert_issuer_info), then run --stage remove-old")
	return nil
}

// promoteNext makes the local files follow the cluster once the issuer is
// signed by the new anchor: anchor.crt/key is the anchor of the issuer in
// the cluster, kept to sign the next issuer.
func promoteNext(s *kubeState, stage string) error {
	if err := writeKeyAndCert(join(s.anchorDir, anchorKeyFile), join(s.anchorDir, anchorCertFile), s.nextKey, s.next); err != nil {
		return err
	}
	for _, n := range []string{nextAnchorCertFile, nextAnchorKeyFile} {
		if err := os.Remove(join(s.anchorDir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", stage, err)
		}
	}
	s.anchor, s.next, s.nextKey = s.next, nil, nil
	return nil
}

// externalSwitch is switch-issuer with an external issuer Secret: Trellis
// never writes it, so it says what to do in the external CA, and whether
// the proxies are ready for it.
func (k *kubeRotation) externalSwitch(s *kubeState, o kubeOptions, w io.Writer) error {
	switch {
	case s.phase == phaseIdle:
		return fmt.Errorf("switch-issuer: refused: no new anchor is pending (%s is not in %s); run --stage add-anchor first", nextAnchorCertFile, s.anchorDir)
	case s.phase == phaseSwitched:
		fmt.Fprintf(w, "switch-issuer: already done by the external CA (issuer %q is signed by anchor %q); next stage: remove-old, once every proxy has renewed its certificate\n",
			s.issuer.Subject.CommonName, s.anchor.Subject.CommonName)
		return errAlreadyDone
	case s.addPartial:
		return fmt.Errorf("switch-issuer: refused: the new anchor is not in %s yet (add-anchor was interrupted); run --stage add-anchor again", kubeAnchorsCM)
	}
	ready := "every proxy already trusts the new anchor: the external CA may switch now"
	if err := o.checkProxies(s.asRotation(), StageSwitchIssuer); err != nil {
		ready = "do not switch yet: " + err.Error()
	}
	return fmt.Errorf("switch-issuer: refused: the issuer Secret %s/%s is not Trellis-labelled (%s=%s): an external CA (e.g. cert-manager) owns it and Trellis does not write it. "+
		"Switch the issuer in the external CA: e.g. point the cert-manager Issuer (type CA) at a Secret holding the new anchor, tls.crt=%s and tls.key=%s, and let it re-issue %s "+
		"(its ca.crt then holds only the new anchor; the controller serves the bundle of %s, which trusts both). "+
		"Then, once every proxy has renewed its certificate from the new issuer, run --stage remove-old (it checks that).\n  %s",
		s.namespace, kubeIssuerSecret, labelPartOf, labelPartOfValue, join(s.anchorDir, nextAnchorCertFile), join(s.anchorDir, nextAnchorKeyFile),
		kubeIssuerSecret, kubeAnchorsCM, ready)
}

func (k *kubeRotation) removeOld(ctx context.Context, s *kubeState, o kubeOptions, w io.Writer) error {
	switch s.phase {
	case phaseIdle:
		if err := k.writeBundle(ctx, s, s.bundle); err != nil {
			return err
		}
		fmt.Fprintf(w, "remove-old: already done (the bundle holds only anchor %q)\n", s.anchor.Subject.CommonName)
		return errAlreadyDone
	case phaseAdded:
		return errors.New("remove-old: refused: switch-issuer is not done (the issuer is still signed by the old anchor); run --stage switch-issuer first")
	}
	if err := o.checkProxies(s.asRotation(), StageRemoveOld); err != nil {
		return fmt.Errorf("remove-old: refused: %w", err)
	}
	old := s.old()
	bundle := []*x509.Certificate{s.anchor}
	if err := k.writeBundle(ctx, s, bundle); err != nil {
		return err
	}
	if s.externalSwitched {
		if err := promoteNext(s, StageRemoveOld); err != nil {
			return err
		}
		s.externalSwitched = false
		fmt.Fprintf(w, "remove-old: the new anchor and its key are now %s and %s\n", join(s.anchorDir, anchorCertFile), join(s.anchorDir, anchorKeyFile))
	}
	s.phase = phaseIdle
	for _, c := range old {
		fmt.Fprintf(w, "remove-old: removed anchor %q (SHA-256 %s)\n", c.Subject.CommonName, pki.CertFingerprint(c))
	}
	fmt.Fprintf(w, "remove-old: done. %s holds only anchor %q, fingerprint %s; the rotation is complete\n",
		s.bundleObjects(), s.anchor.Subject.CommonName, pki.Fingerprint(bundle))
	return nil
}

// kubeStatus is the --status document of a cluster.
func kubeStatus(s *kubeState, now time.Time) statusDoc {
	var notes []string
	if s.external {
		notes = append(notes, fmt.Sprintf("the Secret is not Trellis-labelled: an external CA (cert-manager) owns it and switches the issuer; add-anchor and remove-old update only %s", kubeAnchorsCM))
	}
	if s.anchorDir == "" && s.phase == phaseSwitched {
		notes = append(notes, "(no --anchor-dir: a pending add-anchor cannot be told from a finished switch-issuer)")
	}
	if s.addPartial {
		notes = append(notes, "add-anchor was interrupted: run --stage add-anchor again to finish it")
	}
	if s.switchPartial {
		notes = append(notes, "switch-issuer was interrupted: run --stage switch-issuer again to finish it")
	}
	if s.externalSwitched {
		notes = append(notes, "the external CA switched to the new anchor's issuer: run --stage remove-old once every proxy has renewed its certificate")
	}
	if s.cmStale {
		notes = append(notes, fmt.Sprintf("ConfigMap %s differs from the Secret's %s (fingerprint %s): running the current stage again makes them equal",
			kubeAnchorsCM, kubeSecretCA, pki.Fingerprint(s.cmBundle)))
	}
	src := kubeSecretCA
	if s.external {
		src = kubeAnchorsCM
	}
	return newStatusDoc(fmt.Sprintf("Secret %s/%s", s.namespace, kubeIssuerSecret), s.phase, notes, s.anchor, s.next, s.issuer, src, s.bundle, now)
}

// meshedProxy is one proxy to check: a running meshed pod.
type meshedProxy struct{ namespace, name string }

func (p meshedProxy) String() string { return p.namespace + "/" + p.name }

// listMeshed returns the running meshed pods, sorted, and describes the
// ones skipped (not running: their proxy learns the bundle at start).
func listMeshed(ctx context.Context, client kubernetes.Interface) ([]meshedProxy, []string, error) {
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: k8slabels.LabelProxied + "=true"})
	if err != nil {
		return nil, nil, fmt.Errorf("list meshed pods (label %s=true): %w", k8slabels.LabelProxied, err)
	}
	var out []meshedProxy
	var skipped []string
	for _, p := range pods.Items {
		switch {
		case p.DeletionTimestamp != nil:
			skipped = append(skipped, p.Namespace+"/"+p.Name+" (terminating)")
		case p.Status.Phase != corev1.PodRunning:
			skipped = append(skipped, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, p.Status.Phase))
		default:
			out = append(out, meshedProxy{p.Namespace, p.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, skipped, nil
}

// kubeProxyChecker reads every meshed proxy's metrics through the API
// server's pod proxy (as trellis check does) and applies proxyReady.
func kubeProxyChecker(ctx context.Context, client kubernetes.Interface, skip bool, timeout time.Duration, warn io.Writer) func(*rotationState, string) error {
	return func(s *rotationState, stage string) error {
		if skip {
			fmt.Fprintf(warn, "warning: --skip-proxy-check: not checking that proxies are ready for %s\n", stage)
			return nil
		}
		proxies, skipped, err := listMeshed(ctx, client)
		if err != nil {
			return err
		}
		for _, sk := range skipped {
			fmt.Fprintf(warn, "note: not checking meshed pod %s\n", sk)
		}
		var errs []error
		for _, p := range proxies {
			pm, err := scrapeProxy(ctx, client, p, timeout)
			if err != nil {
				errs = append(errs, fmt.Errorf("proxy %s: cannot read its metrics: %w", p, err))
				continue
			}
			if err := proxyReady(s, stage, pm); err != nil {
				errs = append(errs, fmt.Errorf("proxy %s: %w", p, err))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%d of %d proxies not ready:\n  %w", len(errs), len(proxies), joinLines(errs))
		}
		fmt.Fprintf(warn, "all %d meshed proxies are ready for %s\n", len(proxies), stage)
		return nil
	}
}

func scrapeProxy(ctx context.Context, client kubernetes.Interface, p meshedProxy, timeout time.Duration) (proxyMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := client.CoreV1().Pods(p.namespace).ProxyGet("http", p.name, proxyAdminPort, proxyMetricsPath, nil).DoRaw(ctx)
	if err != nil {
		return proxyMetrics{}, fmt.Errorf("%s", firstLine(err.Error()))
	}
	if len(body) > maxMetricsBody {
		return proxyMetrics{}, fmt.Errorf("metrics larger than %d bytes", maxMetricsBody)
	}
	return parseProxyMetrics(bytes.NewReader(body))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// kubeRun is the command line of rotate --kubernetes.
type kubeRun struct {
	kubeconfig, context, namespace, anchorDir string
	stage                                     string
	status, skipProxies                       bool
	printStatus                               func(statusDoc) error
	proxyTimeout                              time.Duration
	opts                                      kubeOptions
}

func runKubeRotate(cmd *cobra.Command, r kubeRun) error {
	if r.stage != "" && r.anchorDir == "" {
		return errors.New("--anchor-dir is required with --kubernetes --stage: it holds the new anchor's key, which never goes to the cluster")
	}
	if r.stage != "" && (r.opts.anchorValidity <= 0 || r.opts.issuerValidity <= 0) {
		return errors.New("--anchor-validity and --issuer-validity must be positive")
	}
	cfg, err := kubeconfig.Load(r.kubeconfig, r.context)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx := cmd.Context()
	k := &kubeRotation{client: client, namespace: r.namespace, anchorDir: r.anchorDir}
	s, err := k.load(ctx)
	if err != nil {
		return err
	}
	if r.status {
		return r.printStatus(kubeStatus(s, r.opts.now))
	}
	r.opts.checkProxies = kubeProxyChecker(ctx, client, r.skipProxies, r.proxyTimeout, cmd.ErrOrStderr())
	err = k.runStage(ctx, s, r.stage, r.opts, cmd.OutOrStdout())
	if errors.Is(err, errAlreadyDone) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}
