package storepolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
)

const (
	// maxManifestDocument bounds one document: a policy object is far
	// smaller, and the input may be anything.
	maxManifestDocument = 4 << 20
)

// Problem is one thing wrong with one object of a manifest.
type Problem struct {
	// Object is "KIND NAMESPACE/NAME", or "document N" when the document
	// has no readable kind.
	Object string `json:"object"`
	// Document is the object's 1-based position in its input.
	Document int `json:"document"`
	// Message starts with the field path (spec.identities[0]: ...).
	Message string `json:"message"`
}

// Checked is what ValidateManifests read.
type Checked struct {
	Objects  int       `json:"objects"` // Trellis policy objects checked
	Skipped  []string  `json:"skipped"` // other kinds, left to the API server
	Problems []Problem `json:"problems"`
}

// ValidateManifests checks every Trellis policy object (Server,
// AuthorizationPolicy, RateLimit, and HTTPRoute) of a multi-document YAML
// or JSON manifest, offline, and reports every problem at once: every
// unknown field (the API server's strict field validation stops at the
// first one and reports nothing else), every value the store file's
// policies would refuse. Targets and parents are not looked up: on a
// cluster they may exist already.
func ValidateManifests(r io.Reader) (Checked, error) {
	c := Checked{Skipped: []string{}, Problems: []Problem{}}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for doc := 1; ; doc++ {
		data, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		if err != nil {
			return c, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(data) > maxManifestDocument {
			return c, fmt.Errorf("document %d: larger than %d bytes", doc, maxManifestDocument)
		}
		if len(bytes.TrimSpace(data)) == 0 || isComment(data) {
			doc--
			continue
		}
		c.check(doc, data)
	}
}

func (c *Checked) check(doc int, data []byte) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		c.Problems = append(c.Problems, Problem{Object: fmt.Sprintf("document %d", doc), Document: doc, Message: err.Error()})
		return
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	_ = kjson.UnmarshalCaseSensitivePreserveInts(js, &head)
	obj, want := newObject(head.Kind)
	if obj == nil {
		c.Skipped = append(c.Skipped, fmt.Sprintf("document %d: %s %s", doc, orNone(head.Kind), head.Metadata.Name))
		return
	}
	c.Objects++
	name := head.Metadata.Name
	if head.Metadata.Namespace != "" {
		name = head.Metadata.Namespace + "/" + name
	}
	add := func(err error) {
		c.Problems = append(c.Problems, Problem{Object: head.Kind + " " + name, Document: doc, Message: err.Error()})
	}
	if head.APIVersion != want {
		add(fmt.Errorf("apiVersion: %q, want %s for a %s", head.APIVersion, want, head.Kind))
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	for _, e := range strict {
		add(e) // `unknown field "spec.identitees"`, duplicate fields
	}
	if err != nil {
		add(err) // a value of the wrong type: the rest is not checked
		return
	}
	for _, e := range checkObject(obj) {
		add(e)
	}
}

// newObject returns an empty object of kind and its apiVersion.
func newObject(kind string) (any, string) {
	switch kind {
	case KindServer:
		return &policyv1.Server{}, PolicyAPIVersion
	case KindAuthzPolicy:
		return &policyv1.AuthorizationPolicy{}, PolicyAPIVersion
	case KindRateLimit:
		return &policyv1.RateLimit{}, PolicyAPIVersion
	case KindHTTPRoute:
		return &gwv1.HTTPRoute{}, GatewayAPIVersion
	}
	return nil, ""
}

// checkObject runs the store file's checks that hold on a cluster too.
func checkObject(obj any) []error {
	var errs []error
	switch o := obj.(type) {
	case *policyv1.Server:
		errs = checkServer(o, false) // accessPolicy included
	case *policyv1.RateLimit:
		errs = checkRateLimit(o, "cluster.local")
	case *policyv1.AuthorizationPolicy:
		errs = checkAuthz(o)
		if o.Spec.TargetRef.Name != "" {
			if err := checkTargetKind(o); err != nil {
				errs = append(errs, err)
			}
		}
	}
	meta := obj.(interface {
		GetName() string
		GetNamespace() string
	})
	if msgs := validation.IsDNS1123Subdomain(meta.GetName()); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("metadata.name: %q: %s", meta.GetName(), strings.Join(msgs, "; ")))
	}
	if ns := meta.GetNamespace(); ns != "" {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("metadata.namespace: %q: %s", ns, strings.Join(msgs, "; ")))
		}
	}
	return errs
}

func orNone(kind string) string {
	if kind == "" {
		return "(no kind)"
	}
	return kind
}

// isComment is true for a document of only comments (after a "---").
func isComment(data []byte) bool {
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}
