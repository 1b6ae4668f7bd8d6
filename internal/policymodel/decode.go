package policymodel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
)

// Set is every object Translate reads, of any namespace: what Decode
// returns, for local mode's store, `trellis policy explain` on files and
// tests.
type Set struct {
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Objects
}

// InNamespace returns the policy objects of namespace ns.
func (s *Set) InNamespace(ns string) Objects {
	var o Objects
	o.Servers = inNS(s.Servers, ns)
	o.Authz = inNS(s.Authz, ns)
	o.RateLimits = inNS(s.RateLimits, ns)
	o.HTTPRoutes = inNS(s.HTTPRoutes, ns)
	o.GRPCRoutes = inNS(s.GRPCRoutes, ns)
	return o
}

// PodsInNamespace returns the pods of namespace ns.
func (s *Set) PodsInNamespace(ns string) []*corev1.Pod { return inNS(s.Pods, ns) }

func inNS[T interface{ GetNamespace() string }](objs []T, ns string) []T {
	var out []T
	for _, o := range objs {
		if o.GetNamespace() == ns {
			out = append(out, o)
		}
	}
	return out
}

// maxDocument bounds one YAML document (a policy object is bounded by its
// CRD to well under this).
const maxDocument = 4 << 20

// Decode reads a multi-document YAML (or JSON) stream of Pods, Namespaces,
// Servers, AuthorizationPolicies, RateLimits, HTTPRoutes and GRPCRoutes.
// Any other kind, or a document that does not decode, is an error naming
// the document.
func Decode(data []byte) (*Set, error) {
	dec, err := decoder()
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReaderSize(bytes.NewReader(data), 4096))
	set := &Set{}
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return set, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(doc) > maxDocument {
			return nil, fmt.Errorf("document %d: larger than %d bytes", i, maxDocument)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if !set.add(obj) {
			return nil, fmt.Errorf("document %d: kind %s is not one policy reads", i, gvk.Kind)
		}
	}
}

// decoder is built once: a scheme is costly and, once built, only read.
var decoder = sync.OnceValues(func() (runtime.Decoder, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, policyv1.AddToScheme, gwv1.Install} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("scheme: %w", err)
		}
	}
	return serializer.NewCodecFactory(s).UniversalDeserializer(), nil
})

func (s *Set) add(obj runtime.Object) bool {
	switch v := obj.(type) {
	case *corev1.Pod:
		s.Pods = append(s.Pods, v)
	case *corev1.Namespace:
		s.Namespaces = append(s.Namespaces, v)
	case *policyv1.Server:
		s.Servers = append(s.Servers, v)
	case *policyv1.AuthorizationPolicy:
		s.Authz = append(s.Authz, v)
	case *policyv1.RateLimit:
		s.RateLimits = append(s.RateLimits, v)
	case *gwv1.HTTPRoute:
		s.HTTPRoutes = append(s.HTTPRoutes, v)
	case *gwv1.GRPCRoute:
		s.GRPCRoutes = append(s.GRPCRoutes, v)
	default:
		return false
	}
	return true
}

// stripComments drops the comment lines of a document, so a document of
// comments only is skipped.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}
