package ewtoken

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wlv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
)

// statusAttempts bounds the retries of a status update on conflicts.
const statusAttempts = 3

// errKeyReplaced: a bootstrap recorded another key while a renewal of the
// previous one was being issued.
var errKeyReplaced = errors.New("a newer bootstrap token was redeemed by another key meanwhile")

// recordIssued writes Certified=True, the key's digest and the
// certificate's expiry into the status of ew (as read when the call was
// authenticated), when they change. A conflict reads the workload again;
// a workload replaced since (another UID) is not written, nor, for a
// renewal (keepKey), one whose recorded key changed: a renewal must never
// bring back a key a bootstrap replaced.
func (a *Authenticator) recordIssued(ctx context.Context, ew *wlv1.ExternalWorkload, keySHA string, notAfter time.Time, keepKey bool) error {
	ref := ewtoken.Ref(ew.Namespace, ew.Name)
	cur := ew
	for attempt := 1; ; attempt++ {
		if keepKey && cur.Status.KeySHA256 != keySHA {
			return fmt.Errorf("externalworkload %s: %w", ref, errKeyReplaced)
		}
		if !statusDiffers(cur, keySHA, notAfter) {
			return nil
		}
		next := cur.DeepCopy()
		setCertified(next, keySHA, notAfter, a.cfg.Now())
		_, err := a.cfg.Workloads.ExternalWorkloads(ew.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsConflict(err) || attempt == statusAttempts {
			return fmt.Errorf("update status of externalworkload %s: %w", ref, err)
		}
		if cur, err = a.cfg.Workloads.ExternalWorkloads(ew.Namespace).Get(ctx, ew.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get externalworkload %s: %w", ref, err)
		}
		if cur.UID != ew.UID {
			return fmt.Errorf("externalworkload %s was replaced while its certificate was issued", ref)
		}
	}
}

// statusDiffers says whether ew's status is not already what it would be
// written to (the API keeps times to the second).
func statusDiffers(ew *wlv1.ExternalWorkload, keySHA string, notAfter time.Time) bool {
	st := ew.Status
	if st.KeySHA256 != keySHA || st.CertificateExpiry == nil || st.CertificateExpiry.Unix() != notAfter.Unix() {
		return true
	}
	c := meta.FindStatusCondition(st.Conditions, wlv1.ConditionCertified)
	return c == nil || c.Status != metav1.ConditionTrue || c.Reason != wlv1.ReasonCertified || c.ObservedGeneration != ew.Generation
}

func setCertified(ew *wlv1.ExternalWorkload, keySHA string, notAfter, now time.Time) {
	ew.Status.KeySHA256 = keySHA
	exp := metav1.NewTime(notAfter.UTC().Truncate(time.Second))
	ew.Status.CertificateExpiry = &exp
	meta.SetStatusCondition(&ew.Status.Conditions, metav1.Condition{
		Type:               wlv1.ConditionCertified,
		Status:             metav1.ConditionTrue,
		Reason:             wlv1.ReasonCertified,
		Message:            "a certificate was issued to the key in status.keySHA256",
		ObservedGeneration: ew.Generation,
		LastTransitionTime: metav1.NewTime(now),
	})
}
