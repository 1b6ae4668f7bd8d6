package install

import (
	"context"
	"fmt"

	"golang.org/x/mod/semver"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/install/gatewayapi"
)

// CRDLookup reads a CRD of the cluster by name: nil and no error when it
// is absent.
type CRDLookup func(ctx context.Context, name string) (*unstructured.Unstructured, error)

// Annotations the Gateway API's CRDs carry.
const (
	annBundleVersion = "gateway.networking.k8s.io/bundle-version"
	annChannel       = "gateway.networking.k8s.io/channel"
)

// GatewayCRDs returns the Gateway API CRDs of channel (HTTPRoute,
// GRPCRoute, ReferenceGrant, from the pinned module) that the cluster
// lacks, and a note for each one it has and keeps: a CRD someone
// installed is never replaced, downgraded or moved to another channel
// (its owner upgrades it). lookup nil (no cluster to look at): every CRD
// is returned, with a note; a server-side apply then refuses to take over
// fields another manager owns.
func GatewayCRDs(ctx context.Context, channel string, lookup CRDLookup) ([]Object, []string, error) {
	var objs []Object
	var notes []string
	if lookup == nil {
		notes = append(notes, "no cluster to look at: the Gateway API CRDs are included; an installed one is not taken over by kubectl apply --server-side (it reports a conflict)")
	}
	for _, r := range gatewayapi.Resources {
		data, err := gatewayapi.CRD(channel, r)
		if err != nil {
			return nil, nil, err
		}
		o, err := foreignCRD(data, "gateway-api/"+channel+"/"+r)
		if err != nil {
			return nil, nil, err
		}
		if lookup != nil {
			have, err := lookup(ctx, o.Name)
			if err != nil {
				return nil, nil, fmt.Errorf("look up CRD %s: %w", o.Name, err)
			}
			if have != nil {
				notes = append(notes, keepNote(have, channel))
				continue
			}
		}
		objs = append(objs, o)
	}
	return objs, notes, nil
}

// keepNote says why an installed CRD is kept, and what it lacks.
func keepNote(have *unstructured.Unstructured, channel string) string {
	ann := have.GetAnnotations()
	v, ch := ann[annBundleVersion], ann[annChannel]
	switch {
	case v == "" || ch == "":
		return fmt.Sprintf("CRD %s is installed without the Gateway API's version annotations: kept as it is", have.GetName())
	case ch != channel:
		return fmt.Sprintf("CRD %s is installed from the %s channel (%s): kept; Trellis reads what it has (--gateway-api-channel %s would change another owner's CRD)", have.GetName(), ch, v, channel)
	case semver.Compare(v, gatewayapi.BundleVersion) < 0:
		return fmt.Sprintf("CRD %s is %s, older than the %s Trellis is built with: kept (its owner upgrades it); fields it lacks are not used", have.GetName(), v, gatewayapi.BundleVersion)
	}
	return fmt.Sprintf("CRD %s is installed (%s, %s channel): kept", have.GetName(), v, ch)
}

// foreignCRD reads a CRD Trellis installs but does not own: it has none
// of Trellis's labels, so uninstall never deletes it (and with it every
// user's routes).
func foreignCRD(data []byte, source string) (Object, error) {
	var c map[string]any
	if err := yaml.Unmarshal(data, &c); err != nil {
		return Object{}, fmt.Errorf("%s: %w", source, err)
	}
	k, _ := KindOf("apiextensions.k8s.io/v1", "CustomResourceDefinition")
	u := unstructured.Unstructured{Object: c}
	if u.GetKind() != k.Kind || u.GetName() == "" {
		return Object{}, fmt.Errorf("%s: not a named CustomResourceDefinition", source)
	}
	return Object{Kind: k, Name: u.GetName(), Source: source, YAML: data, Content: c}, nil
}
