package policycmd

import (
	"cmp"
	"context"
	"net/http"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// PodPolicyRequest names a pod's port, and where to read policy from: the
// cluster of Kubeconfig/Context, or the local store file Config.
type PodPolicyRequest struct {
	Namespace, Pod              string
	Port                        uint32
	Kubeconfig, Context, Config string
	TrustDomain                 string // default cluster.local
	Default                     string // the proxy's --default-inbound-policy, "" = from annotations
}

// PodPolicy computes the ServerPolicy the controller answers the pod's
// proxy for the port (as `policy explain` does: internal/policymodel on the
// objects the user may read), and the default inbound policy that applies
// when no Server selects it (`trellis diagnostics policy`).
func PodPolicy(ctx context.Context, r PodPolicyRequest) (*apiv1.ServerPolicy, string, error) {
	o := explainOpts{
		common: common{namespace: r.Namespace, kubeconfig: r.Kubeconfig, context: r.Context, config: r.Config},
		to:     r.Pod, port: r.Port, def: r.Default,
		trustDomain: cmp.Or(r.TrustDomain, identity.DefaultTrustDomain),
	}
	return o.policy(ctx)
}

// HTTPGet GETs url (a local admin endpoint), bounded as a scrape is.
func HTTPGet(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	return httpGet(ctx, c, url)
}
