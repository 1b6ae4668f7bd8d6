package install

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The CRD types below mirror the fields of apiextensions.k8s.io/v1 the
// chart uses (k8s.io/apiextensions-apiserver is not a dependency of this
// module). Decoding is strict, so a misspelt or misplaced field fails
// here; the API server test (TRELLIS_KUBECONFIG) checks the rest.
type crd struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Scope string `json:"scope"`
		Names struct {
			Kind       string   `json:"kind"`
			ListKind   string   `json:"listKind"`
			Plural     string   `json:"plural"`
			Singular   string   `json:"singular"`
			ShortNames []string `json:"shortNames"`
			Categories []string `json:"categories"`
		} `json:"names"`
		Versions []struct {
			Name                     string `json:"name"`
			Served                   bool   `json:"served"`
			Storage                  bool   `json:"storage"`
			AdditionalPrinterColumns []struct {
				Name     string `json:"name"`
				Type     string `json:"type"`
				JSONPath string `json:"jsonPath"`
				Priority int    `json:"priority"`
			} `json:"additionalPrinterColumns"`
			Schema struct {
				OpenAPIV3Schema *schemaProps `json:"openAPIV3Schema"`
			} `json:"schema"`
			Subresources struct {
				Status *struct{} `json:"status"`
			} `json:"subresources"`
		} `json:"versions"`
	} `json:"spec"`
}

type schemaProps struct {
	Type                  string                  `json:"type"`
	Description           string                  `json:"description"`
	Format                string                  `json:"format"`
	Properties            map[string]*schemaProps `json:"properties"`
	AdditionalProperties  *schemaProps            `json:"additionalProperties"`
	Items                 *schemaProps            `json:"items"`
	Required              []string                `json:"required"`
	Enum                  []any                   `json:"enum"`
	Default               any                     `json:"default"`
	Pattern               string                  `json:"pattern"`
	Minimum               *float64                `json:"minimum"`
	Maximum               *float64                `json:"maximum"`
	MinLength             *int64                  `json:"minLength"`
	MaxLength             *int64                  `json:"maxLength"`
	MaxItems              *int64                  `json:"maxItems"`
	MaxProperties         *int64                  `json:"maxProperties"`
	IntOrString           bool                    `json:"x-kubernetes-int-or-string"`
	AnyOf                 []*schemaProps          `json:"anyOf"`
	ListType              string                  `json:"x-kubernetes-list-type"`
	XValidations          []validationRule        `json:"x-kubernetes-validations"`
	PreserveUnknownFields *bool                   `json:"x-kubernetes-preserve-unknown-fields"`
	EmbeddedResource      bool                    `json:"x-kubernetes-embedded-resource"`
	XListMapKeys          []string                `json:"x-kubernetes-list-map-keys"`
	XMapType              string                  `json:"x-kubernetes-map-type"`
	Nullable              bool                    `json:"nullable"`
	MinItems              *int64                  `json:"minItems"`
	MinProperties         *int64                  `json:"minProperties"`
	ExclusiveMinimum      *bool                   `json:"exclusiveMinimum"`
}

type validationRule struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

var celPlaceholder = regexp.MustCompile(`self`)

func TestCRDSchemas(t *testing.T) {
	m, err := RenderCRDs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"servers.policy.trellis.io":               "Server",
		"authorizationpolicies.policy.trellis.io": "AuthorizationPolicy",
		"ratelimits.policy.trellis.io":            "RateLimit",
		"externalworkloads.workload.trellis.io":   "ExternalWorkload",
	}
	if len(m.Objects) != len(want) {
		t.Fatalf("%d CRDs, want %d", len(m.Objects), len(want))
	}
	for _, o := range m.Objects {
		t.Run(o.Name, func(t *testing.T) {
			var c crd
			if err := yaml.UnmarshalStrict(o.YAML, &c); err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if want[c.Metadata.Name] != c.Spec.Names.Kind {
				t.Errorf("CRD %s has kind %s", c.Metadata.Name, c.Spec.Names.Kind)
			}
			if c.Metadata.Name != c.Spec.Names.Plural+"."+c.Spec.Group || (c.Spec.Group != "policy.trellis.io" && c.Spec.Group != "workload.trellis.io") {
				t.Errorf("name %s is not plural.group (%s.%s)", c.Metadata.Name, c.Spec.Names.Plural, c.Spec.Group)
			}
			if c.Spec.Scope != "Namespaced" || c.Spec.Names.ListKind != c.Spec.Names.Kind+"List" ||
				c.Spec.Names.Singular != strings.ToLower(c.Spec.Names.Kind) {
				t.Errorf("names %+v scope %s", c.Spec.Names, c.Spec.Scope)
			}
			storage := 0
			for _, v := range c.Spec.Versions {
				if v.Storage {
					storage++
				}
				s := v.Schema.OpenAPIV3Schema
				if s == nil {
					t.Fatalf("version %s has no schema", v.Name)
				}
				if !contains(s.Required, "spec") {
					t.Error("spec is not required")
				}
				spec := s.Properties["spec"]
				if spec == nil || len(spec.Required) == 0 {
					t.Error("spec has no required fields")
				}
				checkStructural(t, "", s, true)
				for _, col := range v.AdditionalPrinterColumns {
					if !strings.HasPrefix(col.JSONPath, ".") {
						t.Errorf("printer column %s: jsonPath %q", col.Name, col.JSONPath)
					}
				}
			}
			if storage != 1 {
				t.Errorf("%d storage versions, want 1", storage)
			}
		})
	}
}

// checkStructural applies the rules of a structural schema the API server
// enforces: every node has a type (or is int-or-string), properties only
// on objects, items exactly on arrays, required names existing
// properties, patterns that compile, CEL rules with messages, enum values
// of the node's type; and, for useful errors, every string and list is
// bounded.
func checkStructural(t *testing.T, path string, s *schemaProps, root bool) {
	t.Helper()
	at := path
	if at == "" {
		at = "<root>"
	}
	if s.IntOrString {
		if s.Type != "" {
			t.Errorf("%s: int-or-string must not have a type", at)
		}
	} else if s.Type == "" {
		t.Errorf("%s: no type", at)
	}
	if len(s.Properties) > 0 && s.Type != "object" {
		t.Errorf("%s: properties on a %s", at, s.Type)
	}
	if (s.Items != nil) != (s.Type == "array") {
		t.Errorf("%s: items and type array go together", at)
	}
	if s.Type == "array" && s.MaxItems == nil {
		t.Errorf("%s: unbounded list (maxItems keeps CEL cost and objects small)", at)
	}
	// A date-time (a condition's lastTransitionTime) is bounded by its format.
	if s.Type == "string" && s.MaxLength == nil && len(s.Enum) == 0 && s.Format != "date-time" && !root && !strings.HasSuffix(path, ".apiVersion") && !strings.HasSuffix(path, ".kind") {
		t.Errorf("%s: unbounded string", at)
	}
	for _, r := range s.Required {
		if _, ok := s.Properties[r]; !ok {
			t.Errorf("%s: required %q is not a property", at, r)
		}
	}
	if s.Pattern != "" {
		if _, err := regexp.Compile(s.Pattern); err != nil {
			t.Errorf("%s: pattern: %v", at, err)
		}
	}
	for _, e := range s.Enum {
		if s.Type == "string" {
			if _, ok := e.(string); !ok {
				t.Errorf("%s: enum value %v is not a string", at, e)
			}
		}
	}
	if s.Minimum != nil && s.Maximum != nil && *s.Minimum > *s.Maximum {
		t.Errorf("%s: minimum above maximum", at)
	}
	for _, v := range s.XValidations {
		if v.Message == "" || !celPlaceholder.MatchString(v.Rule) {
			t.Errorf("%s: CEL rule %q needs a message and must refer to self", at, v.Rule)
		}
	}
	for name, p := range s.Properties {
		checkStructural(t, path+"."+name, p, false)
	}
	if s.Items != nil {
		checkStructural(t, path+"[]", s.Items, false)
	}
	if s.AdditionalProperties != nil {
		checkStructural(t, path+"{}", s.AdditionalProperties, false)
	}
}

// TestCRDPatterns checks the schema's patterns against the values users
// write, so the API server's rejections are the intended ones.
func TestCRDPatterns(t *testing.T) {
	m, err := RenderCRDs()
	if err != nil {
		t.Fatal(err)
	}
	schemas := map[string]*schemaProps{}
	for _, o := range m.Objects {
		var c crd
		if err := yaml.Unmarshal(o.YAML, &c); err != nil {
			t.Fatal(err)
		}
		schemas[c.Spec.Names.Kind] = c.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	}
	authz := schemas["AuthorizationPolicy"]
	tests := []struct {
		name    string
		pattern string
		good    []string
		bad     []string
	}{
		// identities: a CEL rule, checked against the proxy's parser in
		// internal/policymodel (TestIdentityPatternAgreesWithParse).
		{"namespaces", authz.Properties["namespaces"].Items.Pattern,
			[]string{"*", "default", "kube-system", "a1"},
			[]string{"", "Default", "-a", "a-", "a.b", "**"}},
		{"targetRef.name", authz.Properties["targetRef"].Properties["name"].Pattern,
			[]string{"web", "web-http", "a.b"},
			[]string{"", "Web", "web_http", "-web", "web."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			re := regexp.MustCompile(tc.pattern)
			for _, g := range tc.good {
				if !re.MatchString(g) {
					t.Errorf("%q rejected", g)
				}
			}
			for _, b := range tc.bad {
				if re.MatchString(b) {
					t.Errorf("%q accepted", b)
				}
			}
		})
	}
	if p := schemas["Server"].Properties["protocol"]; fmt.Sprint(p.Enum) != "[unknown HTTP/1 HTTP/2 gRPC opaque TLS]" || p.Default != "unknown" {
		t.Errorf("Server protocol enum %v default %v", p.Enum, p.Default)
	}
	rl := schemas["RateLimit"]
	for _, f := range []string{"requestsPerSecond", "concurrency", "burst"} {
		if p := rl.Properties[f]; p == nil || p.Minimum == nil || *p.Minimum != 1 || p.Maximum == nil {
			t.Errorf("RateLimit %s must be bounded with minimum 1", f)
		}
	}
	if len(rl.XValidations) < 2 || len(authz.XValidations) < 1 {
		t.Error("cross-field CEL rules missing")
	}
}
