package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Default proxy resources: enough for a sidecar at a few thousand requests
// per second (docs/proxy.md), with a memory limit well above its ~12 MiB
// soft Go limit. No CPU limit: throttling a proxy adds latency to every
// request of the app.
var (
	DefaultProxyCPURequest = resource.MustParse("10m")
	DefaultProxyMemRequest = resource.MustParse("20Mi")
	DefaultProxyMemLimit   = resource.MustParse("64Mi")
	// StateSizeLimit caps the proxy's state volume (a bundle is a few
	// KiB); being in memory, it counts against the proxy's memory.
	StateSizeLimit = resource.MustParse("1Mi")
)

// Options are the per-pod settings read from config.trellis.io/*
// annotations (the namespace's, overridden key by key by the pod's).
type Options struct {
	Sidecar   string // k8slabels.SidecarNative or k8slabels.SidecarClassic
	Redirect  string // k8slabels.RedirectInit or k8slabels.RedirectCNI
	Resources corev1.ResourceRequirements
	// Port lists, sorted and without duplicates; nil when not annotated.
	SkipInboundPorts, SkipOutboundPorts, OpaquePorts []int
	// DefaultInboundPolicy is the proxy's --default-inbound-policy; "" when
	// not annotated (the proxy's default, all-unauthenticated).
	DefaultInboundPolicy string
	// TraceCollector and TraceSampleRatio are the proxy's
	// --trace-collector and --trace-sample-ratio; "" when not set.
	TraceCollector, TraceSampleRatio string
}

// AnnotationError is a malformed annotation: the admission request is
// denied with its message.
type AnnotationError struct {
	Key, Value string
	Err        error
}

func (e *AnnotationError) Error() string {
	v := e.Value
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return fmt.Sprintf("annotation %s=%q: %v", e.Key, v, e.Err)
}

func (e *AnnotationError) Unwrap() error { return e.Err }

// builtinOptions are the defaults of a pod without annotations on an
// install that sets nothing.
func builtinOptions() Options {
	return Options{
		Sidecar: k8slabels.SidecarNative, Redirect: k8slabels.RedirectInit,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    DefaultProxyCPURequest.DeepCopy(),
				corev1.ResourceMemory: DefaultProxyMemRequest.DeepCopy(),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: DefaultProxyMemLimit.DeepCopy(),
			},
		},
	}
}

// ParseOptions reads every config.trellis.io annotation in ann and reports
// every malformed one at once, so one denial shows the user all fixes.
// Missing annotations take the built-in defaults.
func ParseOptions(ann map[string]string) (Options, error) {
	return parseOptions(ann, builtinOptions())
}

// parseOptions is ParseOptions over the given defaults (def is not
// modified).
func parseOptions(ann map[string]string, def Options) (Options, error) {
	var errs []error
	bad := func(key string, err error) {
		errs = append(errs, &AnnotationError{Key: key, Value: ann[key], Err: err})
	}
	o := Options{Sidecar: def.Sidecar, Redirect: def.Redirect, DefaultInboundPolicy: def.DefaultInboundPolicy,
		TraceCollector: def.TraceCollector, TraceSampleRatio: def.TraceSampleRatio}

	switch v, ok := ann[k8slabels.AnnotationSidecarMode]; {
	case !ok:
	case v == k8slabels.SidecarNative || v == k8slabels.SidecarClassic:
		o.Sidecar = v
	default:
		bad(k8slabels.AnnotationSidecarMode, errors.New(`must be "native" or "classic"`))
	}
	switch v, ok := ann[k8slabels.AnnotationRedirect]; {
	case !ok:
	case v == k8slabels.RedirectInit || v == k8slabels.RedirectCNI:
		o.Redirect = v
	default:
		bad(k8slabels.AnnotationRedirect, errors.New(`must be "init" or "cni"`))
	}

	switch v, ok := ann[k8slabels.AnnotationDefaultInboundPolicy]; {
	case !ok:
	case k8slabels.ValidDefaultInboundPolicy(v):
		o.DefaultInboundPolicy = v
	default:
		bad(k8slabels.AnnotationDefaultInboundPolicy, fmt.Errorf("must be one of %s", strings.Join(k8slabels.DefaultInboundPolicies(), ", ")))
	}

	if v, ok := ann[k8slabels.AnnotationTraceCollector]; ok {
		if err := k8slabels.CheckTraceCollector(v); err != nil {
			bad(k8slabels.AnnotationTraceCollector, err)
		}
		o.TraceCollector = v
	}
	if v, ok := ann[k8slabels.AnnotationTraceSampleRatio]; ok {
		if _, err := k8slabels.ParseTraceSampleRatio(v); err != nil {
			bad(k8slabels.AnnotationTraceSampleRatio, err)
		}
		o.TraceSampleRatio = v
	}

	for _, p := range []struct {
		key string
		dst *[]int
	}{
		{k8slabels.AnnotationSkipInboundPorts, &o.SkipInboundPorts},
		{k8slabels.AnnotationSkipOutboundPorts, &o.SkipOutboundPorts},
		{k8slabels.AnnotationOpaquePorts, &o.OpaquePorts},
	} {
		v, ok := ann[p.key]
		if !ok {
			continue
		}
		ports, err := ParsePorts(v)
		if err != nil {
			bad(p.key, err)
			continue
		}
		*p.dst = ports
	}

	o.Resources = *def.Resources.DeepCopy()
	if o.Resources.Requests == nil {
		o.Resources.Requests = corev1.ResourceList{}
	}
	if o.Resources.Limits == nil {
		o.Resources.Limits = corev1.ResourceList{}
	}
	resErr := false
	for _, r := range []struct {
		key   string
		list  corev1.ResourceList
		name  corev1.ResourceName
		limit bool
	}{
		{k8slabels.AnnotationProxyCPURequest, o.Resources.Requests, corev1.ResourceCPU, false},
		{k8slabels.AnnotationProxyCPULimit, o.Resources.Limits, corev1.ResourceCPU, true},
		{k8slabels.AnnotationProxyMemRequest, o.Resources.Requests, corev1.ResourceMemory, false},
		{k8slabels.AnnotationProxyMemLimit, o.Resources.Limits, corev1.ResourceMemory, true},
	} {
		v, ok := ann[r.key]
		if !ok {
			continue
		}
		q, err := ParseQuantity(v, r.limit)
		if err != nil {
			bad(r.key, err)
			resErr = true
			continue
		}
		r.list[r.name] = q
	}
	if !resErr {
		// The API server would reject request > limit too, but naming
		// our annotations tells the user which knob to turn.
		for _, r := range []struct {
			name         corev1.ResourceName
			reqKey, limK string
		}{
			{corev1.ResourceCPU, k8slabels.AnnotationProxyCPURequest, k8slabels.AnnotationProxyCPULimit},
			{corev1.ResourceMemory, k8slabels.AnnotationProxyMemRequest, k8slabels.AnnotationProxyMemLimit},
		} {
			req, okR := o.Resources.Requests[r.name]
			lim, okL := o.Resources.Limits[r.name]
			if okR && okL && req.Cmp(lim) > 0 {
				errs = append(errs, fmt.Errorf("proxy %s request %s exceeds its limit %s (set %s or %s)",
					r.name, req.String(), lim.String(), r.reqKey, r.limK))
			}
		}
	}
	if len(errs) > 0 {
		return Options{}, errors.Join(errs...)
	}
	return o, nil
}

// ParsePorts parses a comma-separated list of TCP ports ("80, 443,8080")
// into sorted, distinct ports. Empty entries and anything outside 1-65535
// are errors: a typo must not silently leave a port redirected.
func ParsePorts(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return []int{}, nil
	}
	fields := strings.Split(s, ",")
	out := make([]int, 0, len(fields))
	for _, f := range fields {
		f = strings.TrimSpace(f)
		if f == "" {
			return nil, errors.New("empty entry in port list")
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			if len(f) > 16 {
				f = f[:16] + "..."
			}
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		out = append(out, int(n))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// FormatPorts is the inverse of ParsePorts: "80,443".
func FormatPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// ParseQuantity parses a Kubernetes quantity ("100m", "64Mi"); negative
// values are errors, and so is zero for a limit (a container that may use
// nothing never starts).
func ParseQuantity(s string, limit bool) (resource.Quantity, error) {
	q, err := resource.ParseQuantity(strings.TrimSpace(s))
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("not a quantity (like 100m, 64Mi): %w", err)
	}
	switch {
	case q.Sign() < 0:
		return resource.Quantity{}, errors.New("must not be negative")
	case limit && q.Sign() == 0:
		return resource.Quantity{}, errors.New("a limit must be greater than zero")
	}
	return q, nil
}
