package install

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// Options are what `trellis install` and `trellis upgrade` render from.
type Options struct {
	// HA merges the chart's values-ha.yaml (3 replicas, anti-affinity, a
	// PodDisruptionBudget, the injector failing closed).
	HA bool
	// Set holds --set arguments, "key=value[,key=value]", applied in order.
	Set []string
	// AcceptTrustDomains sets identity.acceptTrustDomains after the --set
	// values (a --set value cannot hold the list's commas).
	AcceptTrustDomains []string
	// Version is the default image tag (the chart's appVersion).
	Version  string
	Identity Identity
	Webhook  WebhookTLS
}

// BuildValues returns the chart values for opts: the chart defaults, the
// HA profile, the --set values, then the identity material. A Helm user
// gets the same with `-f values-ha.yaml --set ... -f identity-values.yaml`.
func BuildValues(opts Options) (Values, error) {
	v, err := DefaultValues(opts.HA)
	if err != nil {
		return nil, err
	}
	for _, arg := range opts.Set {
		kvs, err := ParseSet(arg)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			if err := v.Set(kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	if len(opts.AcceptTrustDomains) > 0 {
		v.put("identity.acceptTrustDomains", strings.Join(opts.AcceptTrustDomains, ","))
	}
	td, err := trustDomainOf(v)
	if err != nil {
		return nil, err
	}
	if err := checkAcceptTrustDomains(v, td); err != nil {
		return nil, err
	}
	if err := checkTracing(v); err != nil {
		return nil, err
	}
	v.Merge(MaterialValues(opts.Identity, opts.Webhook))
	return v, nil
}

// MaterialValues returns the values that carry identity and webhook
// material, the shape a Helm user writes in a values file.
func MaterialValues(id Identity, wh WebhookTLS) Values {
	v := Values{}
	v.put("identity.trustAnchorsPEM", string(id.TrustAnchorsPEM))
	v.put("identity.externalIssuer", id.External())
	v.put("identity.issuer.tls.crtPEM", string(id.IssuerCertPEM))
	v.put("identity.issuer.tls.keyPEM", string(id.IssuerKeyPEM))
	v.put("webhook.tls.caBundlePEM", string(wh.CAPEM))
	v.put("webhook.tls.crtPEM", string(wh.CertPEM))
	v.put("webhook.tls.keyPEM", string(wh.KeyPEM))
	return v
}

// Render renders the control plane (everything but the CRDs).
func Render(opts Options) (*Manifest, error) {
	v, err := BuildValues(opts)
	if err != nil {
		return nil, err
	}
	return RenderValues(v, opts.Version)
}

// RenderValues renders the control plane from chart values, with
// appVersion as the chart's appVersion (empty: Chart.yaml's).
func RenderValues(v Values, appVersion string) (*Manifest, error) {
	objs, err := renderChart(v, appVersion)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.Kind.Kind == "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s: CRDs belong in the chart's crds/ directory", o.Source)
		}
	}
	if err := checkUnique(objs); err != nil {
		return nil, err
	}
	sortObjects(objs)
	return &Manifest{
		Header: fmt.Sprintf(`# Trellis %s control plane, rendered by trellis install from charts/trellis.
# Contains private keys (identity issuer, webhook serving certificate):
# pipe it to "kubectl apply --server-side -f -", do not store it.
`, versionOr(appVersion)),
		Objects: objs,
	}, nil
}

// RenderCRDs returns the Trellis CRDs (policy.trellis.io, workload.trellis.io: the chart's crds/).
func RenderCRDs() (*Manifest, error) {
	return RenderAllCRDs(context.Background(), "", nil)
}

// RenderAllCRDs returns the Trellis CRDs and, when gatewayChannel
// is set, the Gateway API CRDs of that channel the cluster lacks
// (GatewayCRDs: notes say what is kept and why).
func RenderAllCRDs(ctx context.Context, gatewayChannel string, lookup CRDLookup) (*Manifest, error) {
	names, err := fs.Glob(crdFS(), "crds/*.yaml")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var objs []Object
	for _, n := range names {
		data, err := fs.ReadFile(crdFS(), n)
		if err != nil {
			return nil, err
		}
		docs, err := ParseDocuments(data, n)
		if err != nil {
			return nil, err
		}
		for _, o := range docs {
			if o.Kind.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s: %s in crds/", n, o.Ref())
			}
		}
		objs = append(objs, docs...)
	}
	header := "# Trellis CRDs (policy.trellis.io, workload.trellis.io), from charts/trellis/crds.\n"
	if gatewayChannel != "" {
		gw, notes, err := GatewayCRDs(ctx, gatewayChannel, lookup)
		if err != nil {
			return nil, err
		}
		objs = append(objs, gw...)
		header += "# Gateway API CRDs (" + gatewayChannel + " channel) the cluster lacks.\n"
		for _, n := range notes {
			header += "# " + n + "\n"
		}
	}
	if err := checkUnique(objs); err != nil {
		return nil, err
	}
	sortObjects(objs)
	return &Manifest{Header: header, Objects: objs}, nil
}

// CRDNames returns the names of the CRDs Trellis installs.
func CRDNames() ([]string, error) {
	m, err := RenderCRDs()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range m.Objects {
		out = append(out, o.Name)
	}
	return out, nil
}

// WebhookConfigName is the MutatingWebhookConfiguration's name.
const WebhookConfigName = "trellis-injector"

func versionOr(v string) string {
	if strings.TrimSpace(v) == "" {
		return "(chart appVersion)"
	}
	return v
}
