package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// The multicluster checks (`trellis check --multicluster`) look at this
// cluster (Env) and a peer (Env.Peer): with one trust anchor shared and an
// issuer per cluster, each cluster's proxies must accept the other's
// certificates, and each issuer must be unable to sign the other
// cluster's identities, or a compromised issuer in one cluster could mint
// any identity of the other (docs/multicluster.md). LinksCheck adds the
// health of this cluster's links, when it has any (links.go).

// MulticlusterChecks are `trellis check --multicluster`. LinksCheck and
// GatewayCheck come first: they read this cluster only, so a peer that
// cannot be read (PeerIdentityCheck is fatal) does not hide them.
func MulticlusterChecks() []Check {
	return []Check{LinksCheck, GatewayCheck, PeerIdentityCheck, TrustsPeerCheck, PeerTrustsCheck, TrustDomainsCheck}
}

const multiclusterDoc = "docs/multicluster.md"

// PeerIdentityCheck: the peer's anchors and issuer certificate can be read.
var PeerIdentityCheck = Check{
	Group: "multicluster", Name: "the peer cluster's trust anchors and issuer are readable", Anchor: "peer-identity", Fatal: true,
	Run: func(ctx context.Context, e *Env) Outcome {
		if e.Peer == nil {
			return fail("name the other cluster: --peer-kubeconfig FILE and/or --peer-context NAME", "no peer cluster given")
		}
		_, chain, err := readIssuer(ctx, e.Peer)
		if err != nil {
			return fail("install Trellis in the peer cluster with the shared trust anchor ("+multiclusterDoc+")", "peer %s: %v", e.PeerName, err)
		}
		anchors, err := readAnchors(ctx, e.Peer)
		if err != nil {
			return fail("install Trellis in the peer cluster with the shared trust anchor ("+multiclusterDoc+")", "peer %s: %v", e.PeerName, err)
		}
		return ok("peer %s: issuer %q, %d trust anchors", e.PeerName, chain[0].Subject.CommonName, len(anchors))
	},
}

// TrustsPeerCheck: this cluster's proxies accept the peer's certificates.
var TrustsPeerCheck = Check{
	Group: "multicluster", Name: "this cluster trusts the peer's issuer", Anchor: "trusts-peer",
	Run: func(ctx context.Context, e *Env) Outcome {
		return trusts(ctx, e, e.Peer, "this cluster", "the peer "+e.PeerName)
	},
}

// PeerTrustsCheck: the peer's proxies accept this cluster's certificates.
var PeerTrustsCheck = Check{
	Group: "multicluster", Name: "the peer trusts this cluster's issuer", Anchor: "peer-trusts",
	Run: func(ctx context.Context, e *Env) Outcome {
		return trusts(ctx, e.Peer, e, "the peer "+e.PeerName, "this cluster")
	},
}

// trusts: the issuer of signer chains to the anchors of truster.
func trusts(ctx context.Context, truster, signer *Env, trusterName, signerName string) Outcome {
	if truster == nil || signer == nil {
		return fail("name the other cluster: --peer-kubeconfig FILE and/or --peer-context NAME", "no peer cluster given")
	}
	anchors, err := readAnchors(ctx, truster)
	if err != nil {
		return fail("restore the trust anchors ConfigMap ("+multiclusterDoc+")", "%s: %v", trusterName, err)
	}
	_, chain, err := readIssuer(ctx, signer)
	if err != nil {
		return fail("restore the issuer Secret ("+multiclusterDoc+")", "%s: %v", signerName, err)
	}
	name := chain[0].Subject.CommonName
	if err := chains(chain, anchors, signer.now()); err != nil {
		return fail("give both clusters the same trust anchor: trellis install --identity-trust-anchors (or add it: trellis identity bundle add), see "+multiclusterDoc,
			"%s's issuer %q does not chain to %s's trust anchors, so %s's proxies refuse its workloads: %v", signerName, name, trusterName, trusterName, err)
	}
	return ok("%s's issuer %q chains to %s's trust anchors", signerName, name, trusterName)
}

// TrustDomainsCheck: the clusters sign in different trust domains, and
// neither issuer may sign in the other's.
var TrustDomainsCheck = Check{
	Group: "multicluster", Name: "each cluster's identities are its own", Anchor: "trust-domains",
	Run: func(ctx context.Context, e *Env) Outcome {
		if e.Peer == nil {
			return fail("name the other cluster: --peer-kubeconfig FILE and/or --peer-context NAME", "no peer cluster given")
		}
		local, localAccepts, err := controllerTrustDomains(ctx, e)
		if err != nil {
			return fail("check the controller Deployment", "this cluster: %v", err)
		}
		peer, peerAccepts, err := controllerTrustDomains(ctx, e.Peer)
		if err != nil {
			return fail("check the controller Deployment", "peer %s: %v", e.PeerName, err)
		}
		if local == peer {
			return warn("give each cluster its own trust domain: trellis install --set identity.trustDomain=<cluster>.local, with an issuer made for it ("+multiclusterDoc+")",
				"both clusters sign identities in %q: a policy cannot tell this cluster's workloads from the peer's", local)
		}
		for _, c := range []struct {
			env         *Env
			name, other string
		}{{e, "this cluster", peer}, {e.Peer, "the peer " + e.PeerName, local}} {
			_, chain, err := readIssuer(ctx, c.env)
			if err != nil {
				return fail("restore the issuer Secret ("+multiclusterDoc+")", "%s: %v", c.name, err)
			}
			if why := canSign(chain[0], c.other); why != "" {
				return fail("make each cluster's issuer for its own trust domain only: trellis identity create-issuer --trust-domain ("+multiclusterDoc+")",
					"%s's issuer %q can sign identities in %q, the other cluster's trust domain: %s", c.name, chain[0].Subject.CommonName, c.other, why)
			}
		}
		for _, c := range []struct {
			name, other string
			accepts     []string
		}{{"this cluster", peer, localAccepts}, {"the peer " + e.PeerName, local, peerAccepts}} {
			if !slices.Contains(c.accepts, c.other) {
				return fail("let each cluster's proxies accept the other's trust domain: trellis install --identity-accept-trust-domains ("+multiclusterDoc+")",
					"%s's proxies refuse workloads of %q: its controller does not list it in --accept-trust-domains (%q)", c.name, c.other, c.accepts)
			}
		}
		return ok("this cluster signs in %q, the peer in %q, each accepts the other's, and neither issuer can sign in the other's", local, peer)
	},
}

// canSign says why issuer may sign a SPIFFE ID in trust domain td ("" if
// it may not): no URI name constraint at all, or one that admits td.
func canSign(issuer *x509.Certificate, td string) string {
	for _, ex := range issuer.ExcludedURIDomains {
		if uriDomainMatches(ex, td) {
			return ""
		}
	}
	if len(issuer.PermittedURIDomains) == 0 {
		return "it has no URI name constraint"
	}
	for _, p := range issuer.PermittedURIDomains {
		if uriDomainMatches(p, td) {
			return fmt.Sprintf("its name constraint permits %q", p)
		}
	}
	return ""
}

// uriDomainMatches is RFC 5280's rule for a URI's host against a domain
// constraint: "example.org" admits the host and its subdomains,
// ".example.org" only the subdomains.
func uriDomainMatches(constraint, host string) bool {
	constraint, host = strings.ToLower(constraint), strings.ToLower(host)
	if strings.HasPrefix(constraint, ".") {
		return strings.HasSuffix(host, constraint)
	}
	return host == constraint || strings.HasSuffix(host, "."+constraint)
}

// controllerTrustDomains are ControllerTrustDomains of e's cluster.
func controllerTrustDomains(ctx context.Context, e *Env) (td string, accepts []string, err error) {
	return ControllerTrustDomains(ctx, e.Kube, e.ns())
}

// ControllerTrustDomains are the trust domain the controller in namespace
// ns signs in (--trust-domain, or the default) and the ones its proxies
// accept besides it (--accept-trust-domains), read from its Deployment.
// `trellis multicluster link` reads the peer's this way too.
func ControllerTrustDomains(ctx context.Context, kube kubernetes.Interface, ns string) (td string, accepts []string, err error) {
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, ControllerName, metav1.GetOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("get deployment %s/%s: %w", ns, ControllerName, err)
	}
	td = identity.DefaultTrustDomain
	for _, c := range d.Spec.Template.Spec.Containers {
		if v, found := flagValue(c.Args, "--trust-domain"); found {
			td = v
		}
		if v, found := flagValue(c.Args, "--accept-trust-domains"); found && v != "" {
			accepts = append(accepts, strings.Split(v, ",")...)
		}
	}
	return td, accepts, nil
}

// flagValue is the value of flag in args, as --flag=value or --flag value.
func flagValue(args []string, flag string) (string, bool) {
	for i, a := range args {
		if v, found := strings.CutPrefix(a, flag+"="); found {
			return v, true
		}
		if a == flag && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}
