package routemodel

import (
	"cmp"
	"fmt"
	"regexp"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// rule converts one rule of an accepted route.
func (in Input) rule(r *Route, rule Rule, ann Annotated) *apiv1.Route {
	out := &apiv1.Route{Name: r.Meta.Namespace + "/" + r.Meta.Name, Matches: rule.Matches, Kind: "http"}
	if r.Kind == KindGRPCRoute {
		out.Kind = "grpc"
	}
	if _, ref := extensionRef(rule.Filters); ref != nil {
		// A custom filter Trellis cannot resolve is not skipped: every
		// request of the rule would pass it, so every one is answered
		// 500 (one backend with no authority), nothing else applied.
		out.Backends = []*apiv1.WeightedBackend{{Weight: 1}}
		return out
	}
	for _, b := range rule.Backends {
		wb := &apiv1.WeightedBackend{Weight: uint32(Deref(b.Ref.Weight, 1))}
		if _, ref := extensionRef(b.Filters); ref != nil {
			// The backend's share would pass the custom filter: with
			// no authority, it is answered 500 like an unresolved one.
			out.Backends = append(out.Backends, wb)
			continue
		}
		// An unresolved backend keeps its weight with no authority: the
		// proxy answers 500 to its share, as the Gateway API says.
		wb.Authority, _, _ = in.resolve(r, b.Ref.BackendObjectReference)
		for _, f := range b.Filters {
			wb.RequestHeaders = mergeHeaders(wb.RequestHeaders, f.RequestHeaderModifier)
			wb.ResponseHeaders = mergeHeaders(wb.ResponseHeaders, f.ResponseHeaderModifier)
		}
		out.Backends = append(out.Backends, wb)
	}
	for _, f := range rule.Filters {
		in.filter(r, out, f)
	}
	if t := rule.Timeouts; t != nil {
		out.Timeout = duration(t.Request)
		out.BackendTimeout = duration(t.BackendRequest)
	}
	out.Retry = retryPolicy(rule.Retry, ann.Retry)
	out.Fault = ann.Fault // shared by the route's rules: answers are read-only
	return out
}

func (in Input) filter(r *Route, out *apiv1.Route, f gwv1.HTTPRouteFilter) {
	switch f.Type {
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		out.RequestHeaders = mergeHeaders(out.RequestHeaders, f.RequestHeaderModifier)
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		out.ResponseHeaders = mergeHeaders(out.ResponseHeaders, f.ResponseHeaderModifier)
	case gwv1.HTTPRouteFilterRequestRedirect:
		out.Redirect = redirect(f.RequestRedirect)
	case gwv1.HTTPRouteFilterURLRewrite:
		out.Rewrite = rewrite(f.URLRewrite)
	case gwv1.HTTPRouteFilterRequestMirror:
		if m := in.mirror(r, f.RequestMirror); m != nil {
			out.Mirrors = append(out.Mirrors, m)
		}
	}
}

// checkFilters refuses filters this version cannot apply (CORS, external
// auth, an unknown type), and a filter whose type names a field that is
// not set. An ExtensionRef passes: Trellis resolves none, and the spec
// wants its requests answered 500, not the route refused (see
// UnresolvedFilter).
func checkFilters(fs []gwv1.HTTPRouteFilter) error {
	for i, f := range fs {
		var set bool
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			set = f.RequestHeaderModifier != nil
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			set = f.ResponseHeaderModifier != nil
		case gwv1.HTTPRouteFilterRequestRedirect:
			set = f.RequestRedirect != nil
		case gwv1.HTTPRouteFilterURLRewrite:
			set = f.URLRewrite != nil
		case gwv1.HTTPRouteFilterRequestMirror:
			set = f.RequestMirror != nil
		case gwv1.HTTPRouteFilterExtensionRef:
			set = f.ExtensionRef != nil
		default:
			return fmt.Errorf("[%d]: type %q is not supported", i, f.Type)
		}
		if !set {
			return fmt.Errorf("[%d]: type %s without its field", i, f.Type)
		}
	}
	return nil
}

// extensionRef returns the first custom filter of fs and its index, or
// nil: Trellis implements no custom filter, so none resolves.
func extensionRef(fs []gwv1.HTTPRouteFilter) (int, *gwv1.LocalObjectReference) {
	for i, f := range fs {
		if f.Type == gwv1.HTTPRouteFilterExtensionRef && f.ExtensionRef != nil {
			return i, f.ExtensionRef
		}
	}
	return 0, nil
}

// UnresolvedFilter returns, for the first custom filter of r (rule or
// backendRef level), why it does not resolve and what is answered
// instead; nil when r has none.
func UnresolvedFilter(r *Route) error {
	why := func(ref *gwv1.LocalObjectReference, instead string) string {
		return fmt.Sprintf("ExtensionRef %s/%s %q: Trellis resolves no custom filter; %s answered 500", ref.Group, ref.Kind, ref.Name, instead)
	}
	for i, rule := range r.Rules {
		if j, ref := extensionRef(rule.Filters); ref != nil {
			return fmt.Errorf("spec.rules[%d].filters[%d]: %s", i, j, why(ref, "the rule's requests are"))
		}
		for j, b := range rule.Backends {
			if k, ref := extensionRef(b.Filters); ref != nil {
				return fmt.Errorf("spec.rules[%d].backendRefs[%d].filters[%d]: %s", i, j, k, why(ref, "the backend's share of requests is"))
			}
		}
	}
	return nil
}

// checkExpressions refuses what the proxy would refuse: an expression
// RE2 does not compile (the proxy would then drop the whole answer).
func checkExpressions(m interface {
	GetPathRegex() string
	GetHeaders() []*apiv1.RouteMatch_Header
	GetQueryParams() []*apiv1.RouteMatch_Header
}) error {
	exprs := []string{m.GetPathRegex()}
	for _, h := range append(m.GetHeaders(), m.GetQueryParams()...) {
		if h.GetRegex() {
			exprs = append(exprs, h.GetValue())
		}
	}
	for _, e := range exprs {
		if _, err := regexp.Compile(e); err != nil {
			return fmt.Errorf("regular expression %q: %w", e, err)
		}
	}
	return nil
}

func mergeHeaders(into *apiv1.HeaderModifier, f *gwv1.HTTPHeaderFilter) *apiv1.HeaderModifier {
	if f == nil {
		return into
	}
	if into == nil {
		into = &apiv1.HeaderModifier{}
	}
	for _, h := range f.Set {
		into.Set = append(into.Set, &apiv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		into.Add = append(into.Add, &apiv1.HeaderModifier_Header{Name: string(h.Name), Value: h.Value})
	}
	into.Remove = append(into.Remove, f.Remove...)
	return into
}

func redirect(f *gwv1.HTTPRequestRedirectFilter) *apiv1.Redirect {
	out := &apiv1.Redirect{
		Scheme:     Deref(f.Scheme, ""),
		Hostname:   string(Deref(f.Hostname, "")),
		Port:       uint32(Deref(f.Port, 0)),
		StatusCode: uint32(Deref(f.StatusCode, 302)),
	}
	out.FullPath, out.PrefixMatch = pathModifier(f.Path)
	return out
}

func rewrite(f *gwv1.HTTPURLRewriteFilter) *apiv1.URLRewrite {
	out := &apiv1.URLRewrite{Hostname: string(Deref(f.Hostname, ""))}
	out.FullPath, out.PrefixMatch = pathModifier(f.Path)
	return out
}

func pathModifier(p *gwv1.HTTPPathModifier) (full, prefix string) {
	if p == nil {
		return "", ""
	}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		return Deref(p.ReplaceFullPath, ""), ""
	case gwv1.PrefixMatchHTTPPathModifier:
		// "" would mean "keep the prefix" to the proxy; "/" is what an
		// empty replacement means in the Gateway API.
		return "", cmp.Or(Deref(p.ReplacePrefixMatch, ""), "/")
	}
	return "", ""
}

// mirror converts a mirror whose backend resolves (an unresolved one is
// reported by Status and mirrors nothing).
func (in Input) mirror(r *Route, f *gwv1.HTTPRequestMirrorFilter) *apiv1.Mirror {
	auth, _, _ := in.resolve(r, f.BackendRef)
	if auth == "" {
		return nil
	}
	m := &apiv1.Mirror{Authority: auth}
	switch {
	case f.Percent != nil:
		m.Millionths = uint32(clamp(int64(*f.Percent), 0, 100)) * 10_000
	case f.Fraction != nil:
		den := int64(Deref(f.Fraction.Denominator, 100))
		if den <= 0 {
			return nil
		}
		m.Millionths = uint32(clamp(int64(f.Fraction.Numerator), 0, den) * 1_000_000 / den)
	default:
		return m // every request
	}
	switch m.Millionths {
	case 0:
		return nil // none: 0 would mean all on the wire
	case 1_000_000:
		m.Millionths = 0
	}
	return m
}

// duration converts a Gateway API duration. "0s" is sent as 0, which the
// proxy reads as "no timeout" (the spec's meaning; unset would let the
// proxy's --request-timeout apply); an invalid one (refused by the CRD's
// pattern) is left unset.
func duration(d *gwv1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil || v < 0 {
		return nil
	}
	return durationpb.New(v)
}

// retryPolicy is the rule's retry field with the annotations filling what
// it leaves unset (the field wins where both say something).
func retryPolicy(spec *gwv1.HTTPRouteRetry, ann *apiv1.RetryPolicy) *apiv1.RetryPolicy {
	if spec == nil {
		return ann
	}
	out := &apiv1.RetryPolicy{}
	if ann != nil {
		out = cloneRetry(ann)
	}
	if spec.Attempts != nil {
		out.MaxRetries = uint32(clamp(int64(*spec.Attempts), 0, maxRetries))
	}
	if len(spec.Codes) > 0 {
		out.RetryOnStatus = nil
		for _, c := range spec.Codes {
			out.RetryOnStatus = append(out.RetryOnStatus, uint32(c))
		}
	}
	if b := duration(spec.Backoff); b != nil {
		out.BackoffBase = b
	}
	return out
}

func cloneRetry(r *apiv1.RetryPolicy) *apiv1.RetryPolicy {
	return proto.Clone(r).(*apiv1.RetryPolicy)
}

func clamp(v, lo, hi int64) int64 { return min(max(v, lo), hi) }
