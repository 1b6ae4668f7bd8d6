// Package gatewayapi holds the Gateway API CRDs Trellis reads (HTTPRoute,
// GRPCRoute, ReferenceGrant), of both channels, from the pinned
// sigs.k8s.io/gateway-api module's config/crd, gzipped and embedded so
// that `trellis install --crds` can install them where they are absent.
// TestEmbeddedMatchModule fails when go.mod moves the pin and the files
// were not refreshed (go test ./install/gatewayapi -update).
package gatewayapi

import (
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"io"
	"slices"
)

// Channels.
const (
	Standard     = "standard"
	Experimental = "experimental"
)

// BundleVersion is the Gateway API release of the embedded CRDs (their
// gateway.networking.k8s.io/bundle-version annotation).
const BundleVersion = "v1.6.3"

// Resources are the CRDs Trellis embeds, by plural resource name.
var Resources = []string{"httproutes", "grpcroutes", "referencegrants"}

//go:embed standard/*.yaml.gz experimental/*.yaml.gz
var files embed.FS

// maxCRD bounds one decompressed CRD (the largest is ~0.5 MiB).
const maxCRD = 4 << 20

// CRD returns the YAML of a resource's CRD in a channel.
func CRD(channel, resource string) ([]byte, error) {
	if channel != Standard && channel != Experimental {
		return nil, fmt.Errorf("gateway API channel %q: want %s or %s", channel, Standard, Experimental)
	}
	if !slices.Contains(Resources, resource) {
		return nil, fmt.Errorf("no embedded CRD for %q", resource)
	}
	gz, err := files.ReadFile(channel + "/" + resource + ".yaml.gz")
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", channel, resource, err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxCRD))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", channel, resource, err)
	}
	return data, nil
}
