package k8slabels

import (
	"os"
	"strings"
	"testing"
)

// Every annotation and label of the contract is documented for users: a
// key added here without docs fails.
func TestContractDocumented(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		keys []string
	}{
		{"injection.md", []string{
			AnnotationProxyVersion, LabelProxied, AnnotationTrustAnchors, AnnotationInject,
			AnnotationSidecarMode, AnnotationRedirect, AnnotationProxyCPURequest, AnnotationProxyCPULimit,
			AnnotationProxyMemRequest, AnnotationProxyMemLimit, AnnotationSkipInboundPorts, AnnotationSkipOutboundPorts,
			AnnotationOpaquePorts, AnnotationDefaultInboundPolicy,
		}},
		{"controller-kubernetes.md", []string{AnnotationOpaquePorts, AppProtocolOpaque}},
	} {
		doc, err := os.ReadFile("../../docs/" + tc.doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range tc.keys {
			// A whole key, as written in the docs: `key` or `key: value`.
			if !strings.Contains(string(doc), "`"+key+"`") && !strings.Contains(string(doc), "`"+key+":") {
				t.Errorf("%s is not in docs/%s", key, tc.doc)
			}
		}
	}
}
