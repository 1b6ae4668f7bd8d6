package identitycmd

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// Files of a local controller's state dir. The first four are written by
// `trellis-controller local`; bundle.crt and anchor.next.* by rotate.
//
// Contract: anchor.crt/key is always the anchor that signs issuer.crt;
// bundle.crt (when present) is the full trust bundle the controller serves
// as trust_anchors, in file order, and always holds anchor.crt; when absent
// the bundle is anchor.crt alone. anchor.next.crt/key exist only between
// the add-anchor and switch-issuer stages.
const (
	bundleFile         = "bundle.crt"
	nextAnchorCertFile = "anchor.next.crt"
	nextAnchorKeyFile  = "anchor.next.key"
)

// Rotation stages, in order.
const (
	StageAddAnchor    = "add-anchor"
	StageSwitchIssuer = "switch-issuer"
	StageRemoveOld    = "remove-old"
)

// phase is where a state dir stands in an anchor rotation.
type phase int

const (
	phaseIdle     phase = iota // one anchor; no rotation in progress (or the last one finished)
	phaseAdded                 // add-anchor done: a new anchor is in the bundle, the issuer is still the old anchor's
	phaseSwitched              // switch-issuer done: the issuer is the new anchor's, old anchors still in the bundle
)

func (p phase) String() string {
	switch p {
	case phaseAdded:
		return "add-anchor done; next stage: switch-issuer"
	case phaseSwitched:
		return "switch-issuer done; next stage: remove-old"
	default:
		return "no rotation in progress (one anchor); next stage: add-anchor"
	}
}

// rotationState is a state dir as read from disk.
type rotationState struct {
	dir       string
	anchor    *x509.Certificate
	anchorKey crypto.Signer
	issuer    *x509.Certificate
	issuerKey crypto.Signer
	bundle    []*x509.Certificate
	hasBundle bool // bundle.crt exists
	next      *x509.Certificate
	nextKey   crypto.Signer

	phase phase
	// Interrupted runs, finished by running the same stage again.
	addPartial    bool // anchor.next.crt written, bundle.crt not yet updated
	switchPartial bool // issuer already signed by anchor.next, anchor.crt/key not yet replaced
}

// old returns the anchors of the bundle other than the current one.
func (s *rotationState) old() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range s.bundle {
		if pki.CertFingerprint(c) != pki.CertFingerprint(s.anchor) && (s.next == nil || pki.CertFingerprint(c) != pki.CertFingerprint(s.next)) {
			out = append(out, c)
		}
	}
	return out
}

func loadRotationState(dir string) (*rotationState, error) {
	s := &rotationState{dir: dir}
	var err error
	for _, n := range []string{anchorCertFile, anchorKeyFile, issuerCertFile, issuerKeyFile} {
		ok, err := exists(join(dir, n))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s: no %s; not a controller state dir (start trellis-controller local --state-dir %s once)", dir, n, dir)
		}
	}
	if s.anchor, err = readCert(join(dir, anchorCertFile)); err != nil {
		return nil, err
	}
	if s.anchorKey, err = readKey(join(dir, anchorKeyFile)); err != nil {
		return nil, err
	}
	if s.issuer, err = readCert(join(dir, issuerCertFile)); err != nil {
		return nil, err
	}
	if s.issuerKey, err = readKey(join(dir, issuerKeyFile)); err != nil {
		return nil, err
	}
	if err := pki.KeyMatchesCert(s.issuerKey, s.issuer); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", issuerCertFile, issuerKeyFile, err)
	}
	if s.hasBundle, err = exists(join(dir, bundleFile)); err != nil {
		return nil, err
	}
	if s.hasBundle {
		if s.bundle, err = readCerts(join(dir, bundleFile)); err != nil {
			return nil, err
		}
	} else {
		s.bundle = []*x509.Certificate{s.anchor}
	}
	hasNext, err := exists(join(dir, nextAnchorCertFile))
	if err != nil {
		return nil, err
	}
	if hasNext {
		if s.next, err = readCert(join(dir, nextAnchorCertFile)); err != nil {
			return nil, err
		}
		if s.nextKey, err = readKey(join(dir, nextAnchorKeyFile)); err != nil {
			return nil, fmt.Errorf("%s exists but its key does not: %w", nextAnchorCertFile, err)
		}
		if err := pki.KeyMatchesCert(s.nextKey, s.next); err != nil {
			return nil, fmt.Errorf("%s and %s: %w", nextAnchorCertFile, nextAnchorKeyFile, err)
		}
	}

	signedBy := func(c, parent *x509.Certificate) bool { return c.CheckSignatureFrom(parent) == nil }
	switch {
	case s.next != nil && signedBy(s.issuer, s.next):
		// switch-issuer wrote the issuer and stopped before (or while)
		// replacing anchor.crt/key; anchor.key may already be the new one.
		s.phase, s.switchPartial = phaseAdded, true
	case !signedBy(s.issuer, s.anchor):
		return nil, fmt.Errorf("%s is not signed by %s: the state dir is inconsistent (inspect it with trellis identity inspect)", issuerCertFile, anchorCertFile)
	case pki.KeyMatchesCert(s.anchorKey, s.anchor) != nil:
		return nil, fmt.Errorf("%s does not match %s", anchorKeyFile, anchorCertFile)
	case s.next != nil:
		s.phase = phaseAdded
		s.addPartial = !pki.BundleContains(s.bundle, s.next)
	case len(s.old()) > 0:
		s.phase = phaseSwitched
	default:
		s.phase = phaseIdle
	}
	if !pki.BundleContains(s.bundle, s.anchor) && !s.switchPartial {
		return nil, fmt.Errorf("%s does not hold %s, the anchor of the issuer: add it back with trellis identity bundle add --bundle %s %s",
			bundleFile, anchorCertFile, join(dir, bundleFile), join(dir, anchorCertFile))
	}
	return s, nil
}

// rotateOptions are the inputs of the stages besides the state dir.
type rotateOptions struct {
	anchorValidity time.Duration
	issuerValidity time.Duration
	anchorName     string // empty: trellis-anchor-<UTC time>
	issuerName     string
	now            time.Time
	// checkProxies is called by switch-issuer and remove-old before they
	// change anything; an error stops the stage.
	checkProxies func(s *rotationState, stage string) error
}

// errAlreadyDone is not a failure: the stage's work is on disk already.
var errAlreadyDone = errors.New("already done")

func runStage(s *rotationState, stage string, o rotateOptions, w io.Writer) error {
	switch stage {
	case StageAddAnchor:
		return addAnchor(s, o, w)
	case StageSwitchIssuer:
		return switchIssuer(s, o, w)
	case StageRemoveOld:
		return removeOld(s, o, w)
	default:
		return fmt.Errorf("--stage %q: want %s, %s or %s", stage, StageAddAnchor, StageSwitchIssuer, StageRemoveOld)
	}
}

func addAnchor(s *rotationState, o rotateOptions, w io.Writer) error {
	switch {
	case s.phase == phaseSwitched:
		fmt.Fprintf(w, "add-anchor: already done (the new anchor %q is in use); next stage: remove-old\n", s.anchor.Subject.CommonName)
		return errAlreadyDone
	case s.phase == phaseAdded && !s.addPartial:
		fmt.Fprintf(w, "add-anchor: already done (%s %q is in %s); next stage: switch-issuer\n", nextAnchorCertFile, s.next.Subject.CommonName, bundleFile)
		return errAlreadyDone
	case s.phase == phaseIdle:
		cert, key, err := createNextAnchor(s.dir, o.anchorName, o.anchorValidity, o.now)
		if err != nil {
			return err
		}
		s.next, s.nextKey = cert, key
	}
	// The bundle is written last: once proxies see the new anchor its key
	// is safely on disk.
	bundle, _ := pki.AddToBundle(s.bundle, []*x509.Certificate{s.next})
	if err := saveBundle(join(s.dir, bundleFile), bundle); err != nil {
		return err
	}
	s.bundle, s.phase, s.addPartial = bundle, phaseAdded, false
	fmt.Fprintf(w, "add-anchor: done. New anchor %q (SHA-256 %s) written to %s and added to %s\n",
		s.next.Subject.CommonName, pki.CertFingerprint(s.next), nextAnchorCertFile, bundleFile)
	fmt.Fprintf(w, "  the bundle now holds %d anchors, fingerprint %s\n", len(bundle), pki.Fingerprint(bundle))
	fmt.Fprintln(w, "  next: wait until every proxy reports this bundle fingerprint, then run --stage switch-issuer")
	return nil
}

func switchIssuer(s *rotationState, o rotateOptions, w io.Writer) error {
	switch s.phase {
	case phaseIdle:
		return fmt.Errorf("switch-issuer: refused: no new anchor is pending (%s is missing); run --stage add-anchor first", nextAnchorCertFile)
	case phaseSwitched:
		fmt.Fprintf(w, "switch-issuer: already done (issuer %q is signed by the new anchor %q); next stage: remove-old\n",
			s.issuer.Subject.CommonName, s.anchor.Subject.CommonName)
		return errAlreadyDone
	}
	if s.addPartial {
		return fmt.Errorf("switch-issuer: refused: %s is not in %s yet (add-anchor was interrupted); run --stage add-anchor again", nextAnchorCertFile, bundleFile)
	}
	if !s.switchPartial {
		// Proxies must trust the new anchor before any certificate from it
		// is handed out, or they would refuse their renewed peers.
		if err := o.checkProxies(s, StageSwitchIssuer); err != nil {
			return fmt.Errorf("switch-issuer: refused: %w", err)
		}
		is, err := pki.NewIssuer(s.next, s.nextKey, o.issuerName, o.issuerValidity, o.now)
		if err != nil {
			return err
		}
		if err := writeKeyAndCert(join(s.dir, issuerKeyFile), join(s.dir, issuerCertFile), is.Key, is.Cert); err != nil {
			return err
		}
		s.issuer, s.issuerKey = is.Cert, is.Key
	}
	// The anchor files follow the issuer: anchor.crt is always the
	// issuer's anchor, which the controller checks at start.
	if err := writeKeyAndCert(join(s.dir, anchorKeyFile), join(s.dir, anchorCertFile), s.nextKey, s.next); err != nil {
		return err
	}
	// Certificate first: a key without its certificate is ignored, the
	// other way round would be an inconsistent state.
	for _, n := range []string{nextAnchorCertFile, nextAnchorKeyFile} {
		if err := os.Remove(join(s.dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("switch-issuer: %w", err)
		}
	}
	s.anchor, s.anchorKey, s.next, s.nextKey = s.next, s.nextKey, nil, nil
	s.phase, s.switchPartial = phaseSwitched, false
	fmt.Fprintf(w, "switch-issuer: done. New issuer %q (SHA-256 %s) signed by anchor %q, valid until %s\n",
		s.issuer.Subject.CommonName, pki.CertFingerprint(s.issuer), s.anchor.Subject.CommonName, s.issuer.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  %s/%s now hold the new anchor; the old anchor's key is deleted, its certificate stays in %s\n", anchorCertFile, anchorKeyFile, bundleFile)
	fmt.Fprintln(w, "  next: wait until every proxy has renewed its certificate (trellis_identity_cert_issuer_info), then run --stage remove-old")
	return nil
}

func removeOld(s *rotationState, o rotateOptions, w io.Writer) error {
	switch s.phase {
	case phaseIdle:
		fmt.Fprintf(w, "remove-old: already done (the bundle holds only anchor %q)\n", s.anchor.Subject.CommonName)
		return errAlreadyDone
	case phaseAdded:
		return errors.New("remove-old: refused: switch-issuer is not done (the issuer is still signed by the old anchor); run --stage switch-issuer first")
	}
	// Proxies must all present certificates from the new issuer before
	// anyone stops trusting the old anchor.
	if err := o.checkProxies(s, StageRemoveOld); err != nil {
		return fmt.Errorf("remove-old: refused: %w", err)
	}
	old := s.old()
	bundle := []*x509.Certificate{s.anchor}
	if err := saveBundle(join(s.dir, bundleFile), bundle); err != nil {
		return err
	}
	s.bundle, s.phase = bundle, phaseIdle
	for _, c := range old {
		fmt.Fprintf(w, "remove-old: removed anchor %q (SHA-256 %s) from %s\n", c.Subject.CommonName, pki.CertFingerprint(c), bundleFile)
	}
	fmt.Fprintf(w, "remove-old: done. The bundle holds only anchor %q, fingerprint %s; the rotation is complete\n",
		s.anchor.Subject.CommonName, pki.Fingerprint(bundle))
	return nil
}

// localStatus is the --status document of a state dir.
func localStatus(s *rotationState, now time.Time) statusDoc {
	var notes []string
	if s.addPartial {
		notes = append(notes, "add-anchor was interrupted: run --stage add-anchor again to finish it")
	}
	if s.switchPartial {
		notes = append(notes, "switch-issuer was interrupted: run --stage switch-issuer again to finish it")
	}
	src := bundleFile
	if !s.hasBundle {
		src = anchorCertFile + " (no " + bundleFile + ")"
	}
	return newStatusDoc("state dir "+s.dir, s.phase, notes, s.anchor, s.next, s.issuer, src, s.bundle, now)
}

// createNextAnchor makes the pending anchor of a rotation and writes its
// key, then its certificate, into dir. An empty name gets a UTC time stamp.
func createNextAnchor(dir, name string, validity time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if name == "" {
		name = defaultAnchorName + "-" + now.UTC().Format("20060102-150405")
	}
	cert, key, err := pki.NewRoot(name, validity, now)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKeyAndCert(join(dir, nextAnchorKeyFile), join(dir, nextAnchorCertFile), key, cert); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
