package check

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// The checks below see what a mesh-wide identity outage looks like from
// the proxies (issue 15): a proxy trusting a bundle the cluster no longer
// serves, a certificate from an issuer the others do not trust, a proxy
// cut off from the controller.

// scraped is one ready proxy's metrics body, or why there is none.
type scraped struct {
	pod  *corev1.Pod
	body []byte
	err  error
}

// scrapeReady scrapes every meshed pod whose proxy is ready, a few at a
// time. skip is non-nil when there is nothing to scrape.
func scrapeReady(ctx context.Context, e *Env) ([]scraped, *Outcome) {
	if e.Scrape == nil {
		return nil, &Outcome{Status: Skip, Message: "no way to scrape proxies"}
	}
	pods, err := meshedPods(ctx, e)
	if err != nil {
		o := fail("check that you may list pods", "%v", err)
		return nil, &o
	}
	var out []scraped
	for i := range pods {
		if s, found := proxyStatus(&pods[i]); found && s.Ready {
			out = append(out, scraped{pod: &pods[i]})
		}
	}
	if len(out) == 0 {
		return nil, &Outcome{Status: Skip, Message: "no ready proxy to scrape"}
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range min(scrapeWorkers, len(out)) {
		wg.Go(func() {
			for i := range jobs {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				out[i].body, out[i].err = e.Scrape(sctx, out[i].pod.Namespace, out[i].pod.Name, ProxyAdminPort, "metrics")
				cancel()
			}
		})
	}
	for i := range out {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out, nil
}

// problemsOf lists "ns/pod (problem)" for each proxy whose metrics cannot
// be read or that judge finds a problem with.
func problemsOf(proxies []scraped, judge func(ProxyState) string) []string {
	var bad []string
	for _, s := range proxies {
		ps, problem := stateOf(s)
		if problem == "" {
			problem = judge(ps)
		}
		if problem != "" {
			bad = append(bad, podRef(s.pod)+" ("+problem+")")
		}
	}
	return bad
}

func podRef(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// stateOf parses a scrape; problem is why it cannot be judged.
func stateOf(s scraped) (ps ProxyState, problem string) {
	if s.err != nil {
		return ps, "scrape: " + s.err.Error()
	}
	ps, err := ParseProxyState(s.body)
	if err != nil {
		return ps, err.Error()
	}
	return ps, ""
}

// clusterAnchors reads the anchors ConfigMap: its bundle fingerprint (as
// proxies export it) and each anchor's.
func clusterAnchors(ctx context.Context, e *Env) (bundleFP string, anchorFPs []string, err error) {
	cm, err := e.Kube.CoreV1().ConfigMaps(e.ns()).Get(ctx, AnchorsConfigMap, metav1.GetOptions{})
	if err != nil {
		return "", nil, fmt.Errorf("ConfigMap %s/%s: %w", e.ns(), AnchorsConfigMap, err)
	}
	certs, err := pki.ParseCertsPEM([]byte(cm.Data[AnchorsKey]))
	if err != nil {
		return "", nil, fmt.Errorf("ConfigMap %s/%s: %s: %w", e.ns(), AnchorsConfigMap, AnchorsKey, err)
	}
	for _, c := range certs {
		anchorFPs = append(anchorFPs, pki.CertFingerprint(c))
	}
	return pki.Fingerprint(certs), anchorFPs, nil
}

func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	if fp == "" {
		return "(none)"
	}
	return fp
}

// ProxyTrustCheck: every ready proxy trusts the bundle of the anchors
// ConfigMap (trellis_identity_trust_bundle_info{fingerprint}).
var ProxyTrustCheck = Check{
	Group: "data plane", Name: "proxies trust the current trust anchors", Anchor: "proxy-trust-anchors", Timeout: 2 * time.Minute,
	Run: func(ctx context.Context, e *Env) Outcome {
		proxies, skip := scrapeReady(ctx, e)
		if skip != nil {
			return *skip
		}
		want, _, err := clusterAnchors(ctx, e)
		if err != nil {
			return fail("see the identity checks above", "%v", err)
		}
		bad := problemsOf(proxies, func(ps ProxyState) string {
			switch {
			case ps.BundleFP == "":
				return "no " + TrustBundleMetric
			case ps.BundleFP != want:
				return "trusts bundle " + short(ps.BundleFP)
			}
			return ""
		})
		if len(bad) > 0 {
			return fail("the anchors were replaced rather than rotated, or a rotation stage was just applied: proxies take the new bundle at their next renewal; if they do not, peers reject each other: put the previous anchors back (trellis identity rotate --kubernetes, docs/identity.md) or restart the workloads (kubectl rollout restart)",
				"%d of %d proxies do not trust the bundle of %s (%s): %s", len(bad), len(proxies), AnchorsConfigMap, short(want), listOf(bad))
		}
		return ok("%d proxies trust bundle %s", len(proxies), short(want))
	},
}

// ProxyIssuerCheck: every ready proxy's certificate was signed by the
// issuer of the issuer Secret (trellis_identity_cert_issuer_info). One
// from a previous issuer that still chains to a current anchor is a
// warning (it renews from the current one); any other is a failure.
var ProxyIssuerCheck = Check{
	Group: "data plane", Name: "proxies' certificates come from the current issuer", Anchor: "proxy-issuer", Timeout: 2 * time.Minute,
	Run: func(ctx context.Context, e *Env) Outcome {
		proxies, skip := scrapeReady(ctx, e)
		if skip != nil {
			return *skip
		}
		issuer, err := currentIssuer(ctx, e)
		if err != nil {
			return fail("see the identity checks above", "%v", err)
		}
		_, anchors, err := clusterAnchors(ctx, e)
		if err != nil {
			return fail("see the identity checks above", "%v", err)
		}
		want := pki.CertFingerprint(issuer)
		var bad, old []string
		for _, s := range proxies {
			ps, problem := stateOf(s)
			switch {
			case problem != "":
			case !ps.HasIssuer:
				problem = "no valid certificate"
			case ps.IssuerFP == want:
				continue
			case ps.IssuerAnchorFP != "" && slices.Contains(anchors, ps.IssuerAnchorFP):
				old = append(old, fmt.Sprintf("%s (issuer %s)", podRef(s.pod), short(ps.IssuerFP)))
				continue
			default:
				problem = fmt.Sprintf("issuer %s, chaining to no anchor of %s", short(ps.IssuerFP), AnchorsConfigMap)
			}
			bad = append(bad, podRef(s.pod)+" ("+problem+")")
		}
		switch {
		case len(bad) > 0:
			return fail("their peers reject these certificates: the issuer was replaced by one of another anchor; go back to the previous identity or rotate in stages (docs/identity.md), then restart the pods named",
				"%d of %d proxies hold a certificate not from the current issuer %s: %s", len(bad), len(proxies), short(want), listOf(bad))
		case len(old) > 0:
			return warn("expected right after an issuer rotation: each proxy renews from the current issuer within one renewal",
				"%d of %d proxies still hold a certificate of a previous issuer (still trusted): %s", len(old), len(proxies), listOf(old))
		}
		return ok("%d proxies hold certificates of issuer %s", len(proxies), short(want))
	},
}

func currentIssuer(ctx context.Context, e *Env) (*x509.Certificate, error) {
	sec, err := e.Kube.CoreV1().Secrets(e.ns()).Get(ctx, IssuerSecret, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", e.ns(), IssuerSecret, err)
	}
	certs, err := pki.ParseCertsPEM(sec.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %s: %w", e.ns(), IssuerSecret, corev1.TLSCertKey, err)
	}
	return certs[0], nil
}

// ProxyControlPlaneCheck: every ready proxy is connected to each
// control-plane service it uses (trellis_control_plane_connected):
// identity always; a stream service (destination, policy, routes) when it
// watches something, since an idle proxy holds no stream.
var ProxyControlPlaneCheck = Check{
	Group: "data plane", Name: "proxies are connected to the control plane", Anchor: "proxy-control-plane", Timeout: 2 * time.Minute,
	Run: func(ctx context.Context, e *Env) Outcome {
		proxies, skip := scrapeReady(ctx, e)
		if skip != nil {
			return *skip
		}
		now := e.now()
		bad := problemsOf(proxies, func(ps ProxyState) string { return disconnected(ps, now) })
		if len(bad) > 0 {
			return fail("the proxy serves from what it holds but learns nothing new: check the controller (trellis check, control plane) and the proxy's log (kubectl logs -n NS POD -c trellis-proxy); a proxy whose trust anchors were replaced cannot connect until restarted",
				"%d of %d proxies are cut off: %s", len(bad), len(proxies), listOf(bad))
		}
		return ok("%d proxies connected", len(proxies))
	},
}

// disconnected names the services ps is not connected to, with since when.
func disconnected(ps ProxyState, now time.Time) string {
	names := make([]string, 0, len(ps.ControlServices))
	for n := range ps.ControlServices {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		st := ps.ControlServices[n]
		if st.Connected || (n != identityServiceName && st.Watches == 0) {
			continue
		}
		since := "no message ever"
		if st.LastUpdate > 0 {
			at := time.Unix(int64(st.LastUpdate), 0)
			since = fmt.Sprintf("last message %s ago, at %s", now.Sub(at).Round(time.Second), at.UTC().Format(time.RFC3339))
		}
		if n == identityServiceName {
			since = "Certify failing"
		}
		out = append(out, n+" disconnected, "+since)
	}
	if _, found := ps.ControlServices[identityServiceName]; !found && len(ps.ControlServices) == 0 {
		return "no " + ConnectedMetric + " series"
	}
	return strings.Join(out, "; ")
}
