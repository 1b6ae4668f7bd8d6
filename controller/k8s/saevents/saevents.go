// Package saevents records the identity service's decisions as Kubernetes
// Events on the ServiceAccount they concern, so `kubectl describe sa` and
// `kubectl get events` show who got a certificate and who was refused.
//
// Events go through client-go's events broadcaster (events.k8s.io/v1):
// repeated events of one kind on one object are folded into an event
// series, and the queue drops rather than blocks, so Certify never waits
// on the API server for an event.
package saevents

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"

	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Event reasons, as kubectl shows them.
const (
	ReasonIssued  = "CertificateIssued"
	ReasonRefused = "CertificateRefused"
	// Action is the events.k8s.io action of both.
	Action = "Certify"
	// ReportingController names Trellis as the events' source.
	ReportingController = "trellis.io/identity"
)

// maxNote is the API server's limit on an event's note.
const maxNote = 1024

// Recorder is an identitysvc.EventSink writing Events.
type Recorder struct {
	broadcaster events.EventBroadcaster
	rec         events.EventRecorder
}

var _ identitysvc.EventSink = (*Recorder)(nil)

// Start begins sending events to the API server until ctx ends or
// Shutdown is called. client-go names the replica in reportingInstance
// (the controller plus the host name, which is the pod's).
func Start(ctx context.Context, client kubernetes.Interface) (*Recorder, error) {
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		return nil, fmt.Errorf("start event recording: %w", err)
	}
	return &Recorder{broadcaster: b, rec: b.NewRecorder(scheme.Scheme, ReportingController)}, nil
}

// Shutdown stops sending; events still queued are dropped.
func (r *Recorder) Shutdown() { r.broadcaster.Shutdown() }

// Issued implements identitysvc.EventSink.
func (r *Recorder) Issued(id identity.ID, c identitysvc.Caller, notAfter time.Time) {
	r.rec.Eventf(serviceAccount(id, c), nil, corev1.EventTypeNormal, ReasonIssued, Action,
		"%s", note(fmt.Sprintf("issued %s to %s, valid until %s", id, c.Name, notAfter.UTC().Format(time.RFC3339))))
}

// Refused implements identitysvc.EventSink. The event names the
// ServiceAccount the caller asked to be, which is the one whose owners
// want to know.
func (r *Recorder) Refused(id identity.ID, c identitysvc.Caller, reason string, err error) {
	r.rec.Eventf(serviceAccount(id, c), nil, corev1.EventTypeWarning, ReasonRefused, Action,
		"%s", note(fmt.Sprintf("refused %s (%s): %v", id, reason, err)))
}

// serviceAccount references the identity's ServiceAccount; the UID is
// only known (from the TokenReview) when the token was valid.
func serviceAccount(id identity.ID, c identitysvc.Caller) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: "v1", Kind: "ServiceAccount",
		Namespace: id.Namespace, Name: id.ServiceAccount, UID: types.UID(c.UID),
	}
}

func note(s string) string {
	if len(s) <= maxNote {
		return s
	}
	return s[:maxNote-3] + "..."
}
