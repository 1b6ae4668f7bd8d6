package routemodel

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestParentStatuses(t *testing.T) {
	type cond struct{ status, reason string }
	cases := []struct {
		route              string // ns/name
		files              []string
		parents            int
		accepted, resolved cond
	}{
		{"shop/books-split", nil, 1, cond{"True", "Accepted"}, cond{"True", "ResolvedRefs"}},
		{"shop/books-old", nil, 1, cond{"True", "Accepted"}, cond{"False", "BackendNotFound"}},
		{"reviews/books-for-reviews", nil, 1, cond{"True", "Accepted"}, cond{"False", "RefNotPermitted"}},
		{"reviews/books-for-reviews", []string{"grants.yaml"}, 1, cond{"True", "Accepted"}, cond{"True", "ResolvedRefs"}},
		{"reviews/books-own", []string{"consumer.yaml"}, 1, cond{"True", "Accepted"}, cond{"True", "ResolvedRefs"}},
		{"reviews/books-own-and-v2", []string{"consumer.yaml"}, 1, cond{"True", "Accepted"}, cond{"False", "RefNotPermitted"}},
		{"shop/books-ext", nil, 1, cond{"True", "Accepted"}, cond{"False", "InvalidKind"}},
		{"shop/books-bad-filter", nil, 1, cond{"False", "UnsupportedValue"}, cond{"True", "ResolvedRefs"}},
		{"shop/books-cors", nil, 1, cond{"False", "UnsupportedValue"}, cond{"True", "ResolvedRefs"}},
		{"shop/nowhere", nil, 1, cond{"False", "NoMatchingParent"}, cond{"True", "ResolvedRefs"}},
		// The Gateway parent is another controller's: one entry only.
		{"reviews/ratings", nil, 1, cond{"True", "Accepted"}, cond{"True", "ResolvedRefs"}},
	}
	for _, tc := range cases {
		t.Run(tc.route, func(t *testing.T) {
			f := loadFixture(t, append([]string{"mesh.yaml"}, tc.files...)...)
			ns, name, _ := strings.Cut(tc.route, "/")
			r := f.route(t, ns, name)
			got := ParentStatuses(r, f.Static, "cluster.local")
			if len(got) != tc.parents {
				t.Fatalf("%d parents, want %d: %+v", len(got), tc.parents, got)
			}
			p := got[0]
			if p.ControllerName != ControllerName || p.ParentRef.Kind == nil || *p.ParentRef.Kind != "Service" {
				t.Errorf("entry %+v: not a Service parent of %s", p.ParentRef, ControllerName)
			}
			for _, want := range []struct {
				typ string
				c   cond
			}{{"Accepted", tc.accepted}, {"ResolvedRefs", tc.resolved}} {
				c := findCond(p.Conditions, want.typ)
				if c == nil || string(c.Status) != want.c.status || c.Reason != want.c.reason {
					t.Errorf("%s = %+v, want %+v", want.typ, c, want.c)
				}
				if c != nil && c.ObservedGeneration != r.Meta.Generation {
					t.Errorf("%s observedGeneration %d, want %d", want.typ, c.ObservedGeneration, r.Meta.Generation)
				}
			}
		})
	}
}

func TestMergeParents(t *testing.T) {
	f := loadFixture(t, "mesh.yaml")
	r := f.route(t, "reviews", "ratings")
	want := ParentStatuses(r, f.Static, "cluster.local")
	gateway := gwv1.RouteParentStatus{
		ParentRef: r.Parents[0], ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted", LastTransitionTime: metav1.Now()}},
	}
	merged, changed := MergeParents([]gwv1.RouteParentStatus{gateway}, want)
	if !changed || len(merged) != 2 || merged[0].ControllerName != gateway.ControllerName {
		t.Fatalf("first merge: changed %v, %+v: the gateway's entry must stay first and ours be added", changed, merged)
	}
	if findCond(merged[1].Conditions, "Accepted").LastTransitionTime.IsZero() {
		t.Error("a new condition has no transition time")
	}
	// Unchanged: nothing to write.
	again, changed := MergeParents(merged, ParentStatuses(r, f.Static, "cluster.local"))
	if changed {
		t.Errorf("an unchanged route would be written again: %+v", again)
	}
	// The Service goes: ours turns False, the gateway's is untouched.
	gone := Static{Services: nil}
	next, changed := MergeParents(merged, ParentStatuses(r, gone, "cluster.local"))
	if !changed || findCond(next[1].Conditions, "Accepted").Status != metav1.ConditionFalse {
		t.Errorf("the Service's removal is not written: %+v", next)
	}
	if findCond(next[0].Conditions, "Accepted").Status != metav1.ConditionTrue {
		t.Error("the gateway's entry was changed")
	}
	// No Service parent left: our entry goes, the gateway's stays.
	only, changed := MergeParents(next, nil)
	if !changed || len(only) != 1 || only[0].ControllerName != gateway.ControllerName {
		t.Errorf("our entry is not removed: %+v", only)
	}
}

func findCond(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// Our entry keeps its place among the others: a status another
// controller appended after ours is not rewritten.
func TestMergeParentsKeepsOrder(t *testing.T) {
	f := loadFixture(t, "mesh.yaml")
	r := f.route(t, "reviews", "ratings")
	ours, _ := MergeParents(nil, ParentStatuses(r, f.Static, "cluster.local"))
	gateway := gwv1.RouteParentStatus{ParentRef: r.Parents[0], ControllerName: "example.com/gateway"}
	have := append(ours, gateway)
	if _, changed := MergeParents(have, ParentStatuses(r, f.Static, "cluster.local")); changed {
		t.Error("an unchanged status would be written again because of its order")
	}
}

// The ResolvedRefs message names the custom filter, where it is and
// what is answered instead; a backend-level one is found too.
func TestUnresolvedFilterMessage(t *testing.T) {
	f := loadFixture(t, "mesh.yaml")
	r := f.route(t, "shop", "books-ext")
	c := findCond(ParentStatuses(r, f.Static, "cluster.local")[0].Conditions, "ResolvedRefs")
	if want := `spec.rules[0].filters[1]: ExtensionRef example.com/Auth "x": Trellis resolves no custom filter; the rule's requests are answered 500`; c == nil || c.Message != want {
		t.Errorf("ResolvedRefs %+v, want the message %q", c, want)
	}
	backendOnly := *r
	backendOnly.Rules = r.Rules[1:]
	err := UnresolvedFilter(&backendOnly)
	if want := `spec.rules[0].backendRefs[1].filters[0]: ExtensionRef example.com/Sign "sig": Trellis resolves no custom filter; the backend's share of requests is answered 500`; err == nil || err.Error() != want {
		t.Errorf("UnresolvedFilter = %v, want %q", err, want)
	}
	if err := UnresolvedFilter(f.route(t, "shop", "books-split")); err != nil {
		t.Errorf("a route without custom filters: %v", err)
	}
}
