package ewtoken

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/ewtoken/ewsecret"
)

// bootstrap redeems a bootstrap token. Everything is checked before the
// token's Secret is deleted, so a refused call leaves the token usable;
// the delete is conditional on the Secret read, so of concurrent callers
// with the same token exactly one gets a certificate.
func (a *Authenticator) bootstrap(ctx context.Context, req identitysvc.Request) (identitysvc.Caller, error) {
	if err := a.checkDomain(req.ID); err != nil {
		return identitysvc.Caller{}, err
	}
	tok, err := ewtoken.ParseBootstrap(req.Token)
	if err != nil {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadToken, err)
	}
	if req.PublicKey == nil {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadCSR,
			errors.New("the certificate signing request is not valid for the identity asked for: the bootstrap token was not spent"))
	}
	keySHA, err := ewtoken.KeySHA256(req.PublicKey)
	if err != nil {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadCSR, err)
	}
	secret, err := a.tokenSecret(ctx, tok)
	if err != nil {
		return identitysvc.Caller{}, err
	}
	ew, err := a.workload(ctx, tok.Namespace, tok.Name, req.ID)
	if err != nil {
		return identitysvc.Caller{}, err
	}
	if err := a.deleteSecret(ctx, secret, deletedRedeemed); err != nil {
		return identitysvc.Caller{}, err
	}
	a.log.Info("external workload bootstrap token redeemed", "externalworkload", ewtoken.Ref(tok.Namespace, tok.Name),
		"secret", secret.Name, "key_sha256", keySHA)
	// The status is what renewals are checked against: without it the
	// certificate could never be renewed, so it is written before the
	// certificate is returned, or the call fails.
	return identitysvc.Caller{
		Name: callerName(tok.Namespace, tok.Name, "bootstrap token"),
		Issued: func(ctx context.Context, leaf *x509.Certificate) error {
			err := a.recordIssued(ctx, ew, keySHA, leaf.NotAfter, false)
			if err != nil {
				a.m.statusErrors.Inc()
				return fmt.Errorf("externalworkload %s: the bootstrap token was spent, mint a new one: %w", ewtoken.Ref(tok.Namespace, tok.Name), err)
			}
			return nil
		},
	}, nil
}

// expiry is when the token of s expires: the expiry it records, but never
// later than MaxTTL after the API server created the Secret, whatever its
// creator wrote (anyone who may create Secrets here must not mint tokens
// that live for ever).
func expiry(s *corev1.Secret, rec ewsecret.Record) time.Time {
	created := s.CreationTimestamp.Time
	if created.IsZero() {
		return rec.Expiry
	}
	if limit := created.Add(ewsecret.MaxTTL + time.Minute); limit.Before(rec.Expiry) {
		return limit
	}
	return rec.Expiry
}

// tokenSecret reads the Secret of tok and checks that it records exactly
// this token, for this workload, unexpired. An expired one is deleted.
func (a *Authenticator) tokenSecret(ctx context.Context, tok ewtoken.Bootstrap) (*corev1.Secret, error) {
	name := ewsecret.Name(tok.Hash())
	s, err := a.cfg.Secrets.Secrets(a.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, refusal(metrics.ReasonBadToken, errors.New("unknown or already redeemed bootstrap token: mint a new one (trellis external-workload token)"))
	case err != nil:
		return nil, unavailable("get secret "+a.cfg.Namespace+"/"+name, err)
	}
	rec, err := ewsecret.Read(s)
	if err != nil {
		return nil, refusal(metrics.ReasonBadToken, fmt.Errorf("bootstrap token record: %w", err))
	}
	// Both sides are hex SHA-256 of the same length: the comparison takes
	// the same time wherever they differ.
	if subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(tok.Hash())) != 1 {
		return nil, refusal(metrics.ReasonBadToken, errors.New("unknown or already redeemed bootstrap token"))
	}
	if rec.Namespace != tok.Namespace || rec.Name != tok.Name {
		return nil, refusal(metrics.ReasonBadToken, fmt.Errorf("secret %s records a token of another workload", s.Name))
	}
	if exp := expiry(s, rec); !a.cfg.Now().Before(exp) {
		if err := a.deleteSecret(ctx, s, deletedExpired); err != nil {
			a.log.Warn("cannot delete an expired bootstrap token secret", "secret", s.Name, "err", err)
		}
		return nil, refusal(metrics.ReasonBadToken, fmt.Errorf("bootstrap token expired at %s: mint a new one (trellis external-workload token)",
			exp.UTC().Format(time.RFC3339)))
	}
	return s, nil
}

// deleteSecret deletes s only if it is still the object read (same UID
// and resourceVersion): the caller whose delete succeeds owns the token.
func (a *Authenticator) deleteSecret(ctx context.Context, s *corev1.Secret, reason string) error {
	uid, rv := s.UID, s.ResourceVersion
	err := a.cfg.Secrets.Secrets(a.cfg.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
	})
	switch {
	case apierrors.IsNotFound(err):
		return refusal(metrics.ReasonBadToken, errors.New("bootstrap token already redeemed"))
	case apierrors.IsConflict(err):
		// Changed since it was read, not deleted: still unspent, retry.
		return unavailable("delete secret "+s.Name, err)
	case err != nil:
		return unavailable("delete secret "+s.Name, err)
	}
	a.m.tokensDeleted.WithLabelValues(reason).Inc()
	return nil
}

// Sweep deletes the token Secrets that have expired and returns how many.
func (a *Authenticator) Sweep(ctx context.Context) (int, error) {
	list, err := a.cfg.Secrets.Secrets(a.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ewsecret.Selector})
	if err != nil {
		return 0, fmt.Errorf("list bootstrap token secrets: %w", err)
	}
	now, n := a.cfg.Now(), 0
	var errs []error
	for i := range list.Items {
		s := &list.Items[i]
		rec, err := ewsecret.Read(s)
		if err != nil || now.Before(expiry(s, rec)) {
			continue // not a token Secret this package wrote, or still valid
		}
		switch err := a.deleteSecret(ctx, s, deletedExpired); {
		case err == nil:
			n++
		case errors.As(err, new(*identitysvc.AuthError)):
			// Deleted by someone else meanwhile.
		default:
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// RunSweep sweeps every interval until ctx is done. Every replica may run
// it: deletes are conditional, a lost race is nothing.
func (a *Authenticator) RunSweep(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := a.Sweep(ctx)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("sweep of expired bootstrap token secrets", "deleted", n, "err", err)
		} else if n > 0 {
			a.log.Info("expired bootstrap token secrets deleted", "deleted", n)
		}
	}
}
