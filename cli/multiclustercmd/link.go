package multiclustercmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/mclink"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// linkOptions are the flags of link.
type linkOptions struct {
	kubeconfig, context string
	cluster, linked     string
	namespace           string
	server              string
	clusterDomain       string
	gateway             string // ip:port: gateway mode
	timeout             time.Duration
	// poll is the pause between reads of the token Secret.
	poll time.Duration
}

func newLinkCommand(open ClusterFunc) *cobra.Command {
	o := linkOptions{poll: time.Second}
	var out output.Flag
	cmd := &cobra.Command{
		Use:   "link",
		Short: "Print the link Secret that lets another cluster mirror this one, to apply there",
		Long: `Run against the peer cluster b (--kubeconfig, --context) after
"trellis multicluster allow" was applied there. Print the link Secret
trellis-link-<b> for "kubectl apply -f -" in cluster a
(--linked-cluster-name).

The Secret holds a kubeconfig for b's API server with the token of the
ServiceAccount trellis-link-<a> (read from Secret trellis-link-<a>-token in
b, waiting up to --timeout for Kubernetes to fill it in), b's trust domain
(from b's controller), b's cluster domain, and the mode (flat: a's pods
reach b's pod IPs). The token is never printed but inside the Secret.

The API server address is the one of b in the kubeconfig, unless
--api-server-address is given: pass it when a's controller reaches b by
another address (a kubeconfig's 127.0.0.1 is not b from inside a).`,
		Example: `  # With b's context: the link Secret for a
  trellis multicluster link --context b --cluster-name b --linked-cluster-name a | kubectl --context a apply -f -

  # b's API server as a's pods reach it
  trellis multicluster link --context b --cluster-name b --linked-cluster-name a \
    --api-server-address https://10.0.0.10:6443 | kubectl --context a apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			c, err := open(o.kubeconfig, o.context)
			if err != nil {
				return fmt.Errorf("cluster %s: %w", o.cluster, err)
			}
			if o.server == "" && loopback(c.Server) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the kubeconfig names cluster %s's API server %s, which cluster %s's controller cannot reach at that address; pass --api-server-address\n", o.cluster, c.Server, o.linked)
			}
			l, err := makeLink(cmd.Context(), c, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "link to cluster %s (trust domain %s), for cluster %s: apply it there\n", l.Cluster, l.TrustDomain, o.linked)
			return output.Write(cmd.OutOrStdout(), out.Format(), l.Secret(o.namespace), nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig of the peer cluster (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context of the peer cluster (default the current context)")
	f.StringVar(&o.cluster, "cluster-name", "", "name of the peer cluster, this one: the suffix of its mirrors (a DNS label of at most 20 characters)")
	f.StringVar(&o.linked, "linked-cluster-name", "", "name of the cluster that links to this one, as given to allow")
	f.StringVar(&o.server, "api-server-address", "", "https://host:port of the peer's API server as the linking cluster reaches it (default the kubeconfig's)")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "DNS suffix of the peer's Services")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "how long to wait for the token Secret to be filled in")
	f.StringVar(&o.gateway, "gateway-address", "", "ip:port of the peer's multicluster gateway as the linking cluster reaches it: gateway mode (mirrors point at the gateway); empty: flat mode (mirrors point at the peer's pod IPs)")
	addNamespaceFlag(cmd, &o.namespace)
	_ = cmd.MarkFlagRequired("cluster-name")
	_ = cmd.MarkFlagRequired("linked-cluster-name")
	out.Register(cmd, output.YAML, output.JSON)
	return cmd
}

// check validates the flags before any cluster is asked.
func (o linkOptions) check() error {
	if err := checkName("cluster-name", o.cluster); err != nil {
		return err
	}
	if err := checkName("linked-cluster-name", o.linked); err != nil {
		return err
	}
	if o.cluster == o.linked {
		return fmt.Errorf("--cluster-name and --linked-cluster-name are both %q: a cluster does not link to itself", o.cluster)
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--timeout %s: must be positive", o.timeout)
	}
	if o.server != "" {
		u, err := url.Parse(o.server)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("--api-server-address %q: want https://host:port", o.server)
		}
	}
	return nil
}

// makeLink reads the peer c and makes the link to it.
func makeLink(ctx context.Context, c Cluster, o linkOptions) (mclink.Link, error) {
	server := o.server
	if server == "" {
		server = c.Server
	}
	if server == "" {
		return mclink.Link{}, errors.New("the kubeconfig names no API server: pass --api-server-address")
	}
	token, ca, err := waitForToken(ctx, c.Kube, o)
	if err != nil {
		return mclink.Link{}, err
	}
	td, _, err := check.ControllerTrustDomains(ctx, c.Kube, o.namespace)
	if err != nil {
		return mclink.Link{}, fmt.Errorf("trust domain of cluster %s (is Trellis installed there?): %w", o.cluster, err)
	}
	kc, err := tokenKubeconfig(o.cluster, mclink.SecretName(o.linked), server, ca, token)
	if err != nil {
		return mclink.Link{}, err
	}
	l := mclink.Link{Cluster: o.cluster, TrustDomain: td, ClusterDomain: o.clusterDomain, Mode: mclink.ModeFlat, Kubeconfig: kc}
	if o.gateway != "" {
		l.Mode, l.Gateway = mclink.ModeGateway, o.gateway
	}
	if err := l.Validate(); err != nil {
		return mclink.Link{}, fmt.Errorf("link to cluster %s: %w", o.cluster, err)
	}
	return l, nil
}

// waitForToken reads the ServiceAccount token Secret that allow made
// until Kubernetes has filled in its token and CA, or o.timeout passes.
func waitForToken(parent context.Context, kube kubernetes.Interface, o linkOptions) (token, ca []byte, err error) {
	ctx, cancel := context.WithTimeout(parent, o.timeout)
	defer cancel()
	name := tokenSecretName(o.linked)
	where := fmt.Sprintf("secret %s/%s in cluster %s", o.namespace, name, o.cluster)
	for {
		s, err := kube.CoreV1().Secrets(o.namespace).Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil, fmt.Errorf("%s not found: run `trellis multicluster allow --linked-cluster-name %s -n %s | kubectl --context %s apply -f -` first",
				where, o.linked, o.namespace, contextName(o))
		case parent.Err() != nil:
			return nil, nil, fmt.Errorf("wait for %s: %w", where, parent.Err())
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("%s has no token and ca.crt after %s: is the token controller running? (kubectl --context %s -n %s describe secret %s)",
				where, o.timeout, contextName(o), o.namespace, name)
		case err != nil:
			return nil, nil, fmt.Errorf("get %s: %w", where, err)
		}
		if err := tokenSecret(s, mclink.SecretName(o.linked)); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", where, err)
		}
		if len(s.Data[corev1.ServiceAccountTokenKey]) > 0 && len(s.Data[corev1.ServiceAccountRootCAKey]) > 0 {
			ca = s.Data[corev1.ServiceAccountRootCAKey]
			if _, err := pki.ParseCertsPEM(ca); err != nil {
				return nil, nil, fmt.Errorf("%s: %s: %w", where, corev1.ServiceAccountRootCAKey, err)
			}
			return s.Data[corev1.ServiceAccountTokenKey], ca, nil
		}
		t := time.NewTimer(o.poll)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// tokenSecret fails unless s is the token Secret of ServiceAccount sa.
func tokenSecret(s *corev1.Secret, sa string) error {
	if s.Type != corev1.SecretTypeServiceAccountToken {
		return fmt.Errorf("type %q, want %q", s.Type, corev1.SecretTypeServiceAccountToken)
	}
	if got := s.Annotations[corev1.ServiceAccountNameKey]; got != sa {
		return fmt.Errorf("the token of ServiceAccount %q, want %q", got, sa)
	}
	return nil
}

// contextName names the peer's kubectl context in hints.
func contextName(o linkOptions) string {
	if o.context != "" {
		return o.context
	}
	return o.cluster
}

// tokenKubeconfig is a kubeconfig for server, trusting ca, as user with
// token: what the linking cluster's controller reads the peer with.
func tokenKubeconfig(cluster, user, server string, ca, token []byte) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cluster] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: string(token)}
	cfg.Contexts[cluster] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: user}
	cfg.CurrentContext = cluster
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig of cluster %s: %w", cluster, err)
	}
	return data, nil
}

// loopback is true for a server URL on this machine's loopback, which
// another cluster's pods cannot reach.
func loopback(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h == "localhost" || (ip != nil && ip.IsLoopback())
}
