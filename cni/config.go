// Package cni is trellis-cni, a chained CNI plugin that programs a meshed
// pod's redirection rules (package redirect) in the pod's network
// namespace from the host, so no pod needs NET_ADMIN. See
// docs/redirection.md.
//
// Which pods are meshed is decided without calling the API server: the
// plugin declares the `io.kubernetes.cri.pod-annotations` capability, so
// containerd and CRI-O hand it the pod's annotations in runtimeConfig, and
// the injector marks every injected pod with trellis.io/proxy-version.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/redirect"
)

// PluginType is the plugin's "type" in a conflist, and its binary's name.
const PluginType = "trellis-cni"

// AnnotationCapability is the runtime capability that passes pod
// annotations to the plugin; the annotations it reads are those of
// internal/k8slabels (notes/k8s-contract.md).
const AnnotationCapability = "io.kubernetes.cri.pod-annotations"

// DefaultExcludeNamespaces are never touched, whatever their annotations.
var DefaultExcludeNamespaces = []string{"kube-system", k8slabels.ControlPlaneNamespace}

// maxConfigBytes bounds what we parse from stdin.
const maxConfigBytes = 1 << 20

// Config is the plugin's entry in the conflist, plus what the runtime adds
// (prevResult, runtimeConfig).
type Config struct {
	types.PluginConf

	ProxyUID          uint32   `json:"proxyUID,omitempty"`
	InboundPort       uint16   `json:"inboundPort,omitempty"`
	OutboundPort      uint16   `json:"outboundPort,omitempty"`
	SkipInboundPorts  string   `json:"skipInboundPorts,omitempty"`  // always skipped, before the pod's own
	SkipOutboundPorts string   `json:"skipOutboundPorts,omitempty"` // likewise
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	IPv6              string   `json:"ipv6,omitempty"` // auto, true, false

	RuntimeConfig struct {
		PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
	} `json:"runtimeConfig"`

	// Parsed from the fields above by ParseConfig.
	Redirect redirect.Config   `json:"-"`
	IPv6Mode redirect.IPv6Mode `json:"-"`
}

// ParseConfig parses and validates the stdin configuration, fills in the
// defaults and the pod-independent part of the redirect config.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("network configuration is %d bytes, at most %d allowed", len(data), maxConfigBytes)
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("parsing network configuration: %w", err)
	}
	if c.ProxyUID == 0 {
		c.ProxyUID = redirect.DefaultProxyUID
	}
	if c.InboundPort == 0 {
		c.InboundPort = redirect.DefaultInboundPort
	}
	if c.OutboundPort == 0 {
		c.OutboundPort = redirect.DefaultOutboundPort
	}
	if c.SkipInboundPorts == "" {
		// The proxy's own inbound, tap and admin ports, as trellis-init gets them.
		c.SkipInboundPorts = "4143,4190,4191"
	}
	if c.ExcludeNamespaces == nil {
		c.ExcludeNamespaces = DefaultExcludeNamespaces
	}
	c.Redirect = redirect.Config{ProxyUID: c.ProxyUID, InboundPort: c.InboundPort, OutboundPort: c.OutboundPort}
	var err error
	if c.Redirect.SkipInbound, err = redirect.ParsePorts(c.SkipInboundPorts); err != nil {
		return nil, fmt.Errorf("skipInboundPorts: %w", err)
	}
	if c.Redirect.SkipOutbound, err = redirect.ParsePorts(c.SkipOutboundPorts); err != nil {
		return nil, fmt.Errorf("skipOutboundPorts: %w", err)
	}
	if c.IPv6Mode, err = redirect.ParseIPv6Mode(c.IPv6); err != nil {
		return nil, err
	}
	if err := c.Redirect.Validate(); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	return &c, nil
}

// Args are the parts of CNI_ARGS we use.
type Args struct {
	PodNamespace string
	PodName      string
}

// ParseArgs parses CNI_ARGS ("K=V;K=V"); unknown keys are ignored, as the
// kubelet's runtimes always set IgnoreUnknown=1.
func ParseArgs(s string) (Args, error) {
	var a Args
	if s == "" {
		return a, nil
	}
	if len(s) > 64<<10 {
		return a, errors.New("CNI_ARGS is too long")
	}
	for kv := range strings.SplitSeq(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return a, fmt.Errorf("CNI_ARGS item %q is not KEY=VALUE", kv)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.PodNamespace = v
		case "K8S_POD_NAME":
			a.PodName = v
		}
	}
	return a, nil
}

// Decision says whether to program a pod and why (for messages).
type Decision struct {
	Redirect bool
	Reason   string
	Config   redirect.Config // with the pod's own skip ports added
}

// Decide applies the meshing rules: an injected pod (the injector's
// trellis.io/proxy-version annotation) outside the excluded namespaces,
// not opted out, gets the rules with its own skip ports added.
func (c *Config) Decide(a Args) (Decision, error) {
	if a.PodNamespace == "" {
		return Decision{Reason: "not a Kubernetes pod (no K8S_POD_NAMESPACE in CNI_ARGS)"}, nil
	}
	if slices.Contains(c.ExcludeNamespaces, a.PodNamespace) {
		return Decision{Reason: "namespace " + a.PodNamespace + " is excluded"}, nil
	}
	ann := c.RuntimeConfig.PodAnnotations
	if ann == nil {
		return Decision{Reason: "the runtime passed no pod annotations (is the " + AnnotationCapability + " capability declared?)"}, nil
	}
	if ann[k8slabels.AnnotationProxyVersion] == "" {
		return Decision{Reason: "pod has no injected proxy"}, nil
	}
	if ann[k8slabels.AnnotationInject] == k8slabels.InjectDisabled {
		return Decision{Reason: "pod opted out (" + k8slabels.AnnotationInject + ": " + k8slabels.InjectDisabled + ")"}, nil
	}
	rc := c.Redirect
	in, err := redirect.ParsePorts(ann[k8slabels.AnnotationSkipInboundPorts])
	if err != nil {
		return Decision{}, fmt.Errorf("pod %s/%s annotation %s: %w", a.PodNamespace, a.PodName, k8slabels.AnnotationSkipInboundPorts, err)
	}
	out, err := redirect.ParsePorts(ann[k8slabels.AnnotationSkipOutboundPorts])
	if err != nil {
		return Decision{}, fmt.Errorf("pod %s/%s annotation %s: %w", a.PodNamespace, a.PodName, k8slabels.AnnotationSkipOutboundPorts, err)
	}
	rc.SkipInbound = redirect.MergePorts(rc.SkipInbound, in)
	rc.SkipOutbound = redirect.MergePorts(rc.SkipOutbound, out)
	return Decision{Redirect: true, Reason: "pod " + a.PodNamespace + "/" + a.PodName + " is meshed", Config: rc}, nil
}
