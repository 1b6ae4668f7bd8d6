package inject

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Injector mutates pods. It holds only its configuration and is safe for
// concurrent use.
type Injector struct {
	cfg Config
	def Options // a pod's options before its annotations
}

// New returns an Injector with cfg's defaults filled in. cfg should have
// passed Validate: install-time settings it cannot use are ignored.
func New(cfg Config) *Injector {
	cfg = cfg.withDefaults()
	if cfg.Validate() != nil {
		// Fall back field by field to what is valid rather than refuse
		// every pod; the controller validates at start.
		if (Config{DefaultRedirect: cfg.DefaultRedirect}).Validate() != nil {
			cfg.DefaultRedirect = ""
		}
		if (Config{ProxyLogLevel: cfg.ProxyLogLevel}).Validate() != nil {
			cfg.ProxyLogLevel = ""
		}
		if (Config{ProxyResources: cfg.ProxyResources}).Validate() != nil {
			cfg.ProxyResources = corev1.ResourceRequirements{}
		}
	}
	return &Injector{cfg: cfg, def: cfg.defaultOptions()}
}

// Config returns the configuration with defaults filled in.
func (in *Injector) Config() Config { return in.cfg }

// Result is the outcome of Mutate.
type Result struct {
	// Pod is a mutated deep copy when Injected, else an unchanged copy.
	Pod      *corev1.Pod
	Injected bool
	// Reason says why the pod was or was not injected, for logs.
	Reason string
	// Warnings are shown to the user (admission warnings, stderr of
	// `trellis inject`).
	Warnings []string
}

// reasonHostNetwork: a pod asking for injection on the host network.
const reasonHostNetwork = "host-network pod"

// Wants says whether the injector gives pod, in namespace (whose
// annotations are nsAnnotations), a proxy, and if not why: the decision of
// Mutate, without the pod's current containers, so that `trellis check`
// can find pods that should be meshed but run without a proxy. An error
// means a malformed trellis.io/inject value, which Mutate denies.
func Wants(pod *corev1.Pod, namespace string, nsAnnotations map[string]string) (bool, string, error) {
	if namespace == "" {
		namespace = pod.Namespace
	}
	if namespace == KubeSystemNamespace || namespace == k8slabels.ControlPlaneNamespace {
		return false, "namespace " + namespace + " is never injected", nil
	}
	v, from := pod.Annotations[k8slabels.AnnotationInject], "pod"
	if _, ok := pod.Annotations[k8slabels.AnnotationInject]; !ok {
		v, from = nsAnnotations[k8slabels.AnnotationInject], "namespace"
		if _, ok := nsAnnotations[k8slabels.AnnotationInject]; !ok {
			return false, "no " + k8slabels.AnnotationInject + " annotation on pod or namespace", nil
		}
	}
	switch v {
	case k8slabels.InjectEnabled:
	case k8slabels.InjectDisabled:
		return false, k8slabels.AnnotationInject + " is disabled on the " + from, nil
	default:
		return false, "", &AnnotationError{Key: k8slabels.AnnotationInject, Value: v,
			Err: fmt.Errorf(`must be "enabled" or "disabled" (on the %s)`, from)}
	}
	if pod.Spec.HostNetwork {
		// Redirecting in the host's network namespace would capture the
		// whole node's traffic.
		return false, reasonHostNetwork, nil
	}
	return true, "", nil
}

// Mutate decides whether pod, created in namespace (whose annotations are
// nsAnnotations), gets the proxy and adds it. The input is not modified.
// An error means malformed annotations or a conflicting pod: the request
// must be denied with its message.
func (in *Injector) Mutate(pod *corev1.Pod, namespace string, nsAnnotations map[string]string) (Result, error) {
	out := pod.DeepCopy()
	res := Result{Pod: out}
	if namespace == "" {
		namespace = out.Namespace
	}
	if namespace == KubeSystemNamespace || namespace == k8slabels.ControlPlaneNamespace {
		res.Reason = "namespace " + namespace + " is never injected"
		return res, nil
	}
	if hasContainer(out, k8slabels.ProxyContainerName) || hasContainer(out, k8slabels.InitContainerName) || hasContainer(out, k8slabels.ValidateContainerName) {
		res.Reason = "already injected"
		return res, nil
	}
	want, reason, err := Wants(out, namespace, nsAnnotations)
	if err != nil {
		return res, err
	}
	if !want {
		res.Reason = reason
		if reason == reasonHostNetwork {
			res.Warnings = append(res.Warnings, "trellis: pod uses the host network and is not injected")
		}
		return res, nil
	}

	// Namespace settings are defaults; the pod's own annotations win key
	// by key.
	merged := map[string]string{}
	for _, src := range []map[string]string{nsAnnotations, out.Annotations} {
		for k, val := range src {
			if strings.HasPrefix(k, k8slabels.ConfigPrefix) {
				merged[k] = val
			}
		}
	}
	opts, err := parseOptions(merged, in.def)
	if err != nil {
		return res, err
	}
	for _, name := range []string{TokenVolumeName, AnchorsVolumeName, XtablesVolumeName, StateVolumeName} {
		for _, vol := range out.Spec.Volumes {
			if vol.Name == name {
				return res, fmt.Errorf("pod already has a volume named %q, which the proxy needs", name)
			}
		}
	}

	in.apply(out, opts)
	res.Injected = true
	res.Reason = fmt.Sprintf("injected (%s sidecar, %s redirection)", opts.Sidecar, opts.Redirect)
	if opts.Sidecar == k8slabels.SidecarClassic && len(pod.Spec.InitContainers) > 0 && opts.Redirect == k8slabels.RedirectInit {
		res.Warnings = append(res.Warnings, "trellis: classic sidecar mode: the pod's init containers run before the proxy, so their outbound TCP connections fail unless their ports are in "+k8slabels.AnnotationSkipOutboundPorts)
	}
	return res, nil
}

// serviceAccountOf is the pod's service account ("default" when the pod
// names none, as the API server's admission does).
func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

func (in *Injector) apply(pod *corev1.Pod, opts Options) {
	cfg := in.cfg
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Annotations[k8slabels.AnnotationProxyVersion] = cfg.Version
	pod.Labels[k8slabels.LabelProxied] = "true"
	if sa := serviceAccountOf(pod); len(validation.IsValidLabelValue(sa)) == 0 {
		pod.Labels[k8slabels.LabelServiceAccount] = sa
	}
	if cfg.TrustAnchorsPEM != "" {
		pod.Annotations[k8slabels.AnnotationTrustAnchors] = cfg.TrustAnchorsPEM
	}

	skipIn := mergePorts([]int{InboundPort, AdminPort, TapPort}, opts.SkipInboundPorts)
	if opts.Redirect == k8slabels.RedirectCNI {
		// The CNI plugin reads only the pod: record the effective
		// settings there when they came from the namespace or the
		// install's default.
		pod.Annotations[k8slabels.AnnotationRedirect] = k8slabels.RedirectCNI
		if opts.SkipInboundPorts != nil {
			pod.Annotations[k8slabels.AnnotationSkipInboundPorts] = FormatPorts(opts.SkipInboundPorts)
		}
		if opts.SkipOutboundPorts != nil {
			pod.Annotations[k8slabels.AnnotationSkipOutboundPorts] = FormatPorts(opts.SkipOutboundPorts)
		}
	}

	proxy := in.proxyContainer(opts)
	if ports := rewriteTCPProbes(pod.Spec.Containers, skipIn); len(ports) > 0 {
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: "TRELLIS_PROXY_TCP_PROBE_PORTS", Value: FormatPorts(ports)})
	}
	var inits []corev1.Container
	if opts.Redirect == k8slabels.RedirectInit {
		inits = append(inits, in.initContainer(skipIn, opts.SkipOutboundPorts))
	} else {
		inits = append(inits, in.validateContainer(skipIn, opts.SkipOutboundPorts))
	}
	if opts.Sidecar == k8slabels.SidecarNative {
		always := corev1.ContainerRestartPolicyAlways
		proxy.RestartPolicy = &always
		inits = append(inits, proxy)
	} else {
		pod.Spec.Containers = append([]corev1.Container{proxy}, pod.Spec.Containers...)
	}
	if len(inits) > 0 {
		pod.Spec.InitContainers = append(inits, pod.Spec.InitContainers...)
	}

	pod.Spec.Volumes = append(pod.Spec.Volumes, in.volumes(opts)...)
}

// rewriteTCPProbes turns the tcpSocket probes of the app's containers on
// redirected ports into HTTP probes of the proxy's /tcp-probe/PORT and
// returns those ports. The kubelet's connection to a redirected port
// reaches the proxy, which accepts it whether or not the app listens: the
// probe would pass before the app is up (and traffic reach a pod whose app
// refuses it) or after it died. The proxy's endpoint connects to the app
// instead. Probes naming another host, or a port the container does not
// declare by that name, are left as they are.
func rewriteTCPProbes(containers []corev1.Container, skipIn []int) []int {
	var ports []int
	for i := range containers {
		c := &containers[i]
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if pr == nil || pr.TCPSocket == nil || pr.TCPSocket.Host != "" {
				continue
			}
			port := containerPort(c, pr.TCPSocket.Port)
			if port == 0 || slices.Contains(skipIn, port) {
				continue
			}
			pr.TCPSocket = nil
			pr.HTTPGet = &corev1.HTTPGetAction{Path: fmt.Sprintf("/tcp-probe/%d", port), Port: intstr.FromInt32(AdminPort)}
			ports = append(ports, port)
		}
	}
	return mergePorts(nil, ports)
}

// containerPort resolves a probe's port: a number, or the name of one of
// the container's ports; 0 when it names none.
func containerPort(c *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return 0
		}
		return int(p.IntVal)
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

func mergePorts(base, extra []int) []int {
	all := append(append([]int{}, base...), extra...)
	ports, _ := ParsePorts(FormatPorts(all)) // sorts and dedups; inputs are valid ports
	return ports
}

func (in *Injector) proxyContainer(opts Options) corev1.Container {
	cfg := in.cfg
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		// Downward-API values first: $(VAR) references below only
		// expand variables defined earlier in the list.
		fieldEnv("TRELLIS_POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("TRELLIS_POD_SA", "spec.serviceAccountName"),
		fieldEnv("TRELLIS_POD_NAME", "metadata.name"),
		{Name: "TRELLIS_PROXY_MODE", Value: "transparent"},
		{Name: "TRELLIS_PROXY_OUTBOUND_ADDR", Value: fmt.Sprintf("127.0.0.1:%d", OutboundPort)},
		{Name: "TRELLIS_PROXY_INBOUND_ADDR", Value: fmt.Sprintf("0.0.0.0:%d", InboundPort)},
		{Name: "TRELLIS_PROXY_ADMIN_ADDR", Value: fmt.Sprintf("0.0.0.0:%d", AdminPort)},
		{Name: "TRELLIS_PROXY_TAP_ADDR", Value: fmt.Sprintf("0.0.0.0:%d", TapPort)},
		{Name: "TRELLIS_PROXY_CONTROLLER_ADDR", Value: cfg.ControllerAddr},
		{Name: "TRELLIS_PROXY_CONTROLLER_IDENTITY", Value: cfg.ControllerIdentity},
		{Name: "TRELLIS_PROXY_IDENTITY", Value: "spiffe://" + cfg.TrustDomain + "/ns/$(TRELLIS_POD_NAMESPACE)/sa/$(TRELLIS_POD_SA)"},
		{Name: "TRELLIS_PROXY_TOKEN_FILE", Value: TokenPath},
		{Name: "TRELLIS_PROXY_TRUST_ANCHORS", Value: AnchorsPath},
		{Name: "TRELLIS_PROXY_TRUST_ANCHORS_CACHE", Value: AnchorsCachePath},
		{Name: "TRELLIS_PROXY_WORKLOAD", Value: "$(TRELLIS_POD_NAME)"},
		// Policy watches name the pod, so Servers apply per pod.
		{Name: "TRELLIS_PROXY_POD_NAME", Value: "$(TRELLIS_POD_NAME)"},
		// The inbound side forwards to the pod IP, not 127.0.0.1: a
		// process listening only on loopback is not exposed to the mesh.
		fieldEnv("TRELLIS_PROXY_APP_IP", "status.podIP"),
	}
	if opts.DefaultInboundPolicy != "" {
		env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_DEFAULT_INBOUND_POLICY", Value: opts.DefaultInboundPolicy})
	}
	if opts.TraceCollector != "" {
		env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_TRACE_COLLECTOR", Value: opts.TraceCollector})
		if opts.TraceSampleRatio != "" {
			env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_TRACE_SAMPLE_RATIO", Value: opts.TraceSampleRatio})
		}
	}
	if opts.OpaquePorts != nil {
		env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_OPAQUE_PORTS", Value: FormatPorts(opts.OpaquePorts)})
	}
	if cfg.ProxyLogLevel != "" {
		env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_LOG_LEVEL", Value: cfg.ProxyLogLevel})
	}
	if len(cfg.AcceptTrustDomains) > 0 {
		env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_ACCEPT_TRUST_DOMAINS", Value: strings.Join(cfg.AcceptTrustDomains, ",")})
	}
	if cfg.ClusterDomain != "" && cfg.ClusterDomain != "cluster.local" {
		env = append(env, corev1.EnvVar{Name: "TRELLIS_PROXY_CLUSTER_DOMAIN", Value: cfg.ClusterDomain})
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(AdminPort)}},
			PeriodSeconds: period, FailureThreshold: failures, TimeoutSeconds: 1,
		}
	}
	return corev1.Container{
		Name:            k8slabels.ProxyContainerName,
		Image:           cfg.ProxyImage,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Ports: []corev1.ContainerPort{
			{Name: "trellis-proxy", ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP},
			{Name: "trellis-admin", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP},
			{Name: "trellis-tap", ContainerPort: TapPort, Protocol: corev1.ProtocolTCP},
		},
		Env:       env,
		Resources: opts.Resources,
		// The startup probe is what holds the app back in native mode:
		// the kubelet starts the next container only once it passes.
		// Up to 2 minutes for the first certificate.
		StartupProbe:   probe("/ready", 1, 120),
		ReadinessProbe: probe("/ready", 5, 3),
		LivenessProbe:  probe("/live", 10, 3),
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolumeName, MountPath: TokenMountPath, ReadOnly: true},
			{Name: AnchorsVolumeName, MountPath: AnchorsMountPath, ReadOnly: true},
			{Name: StateVolumeName, MountPath: StateMountPath},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(ProxyUID),
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// redirectArgs are trellis-init's flags describing the rule set, shared by
// the init container and the check.
func redirectArgs(skipIn, skipOut []int) []string {
	args := []string{
		"--proxy-uid", fmt.Sprint(ProxyUID),
		"--inbound-port", fmt.Sprint(InboundPort),
		"--outbound-port", fmt.Sprint(OutboundPort),
		"--skip-inbound-ports", FormatPorts(skipIn),
	}
	if len(skipOut) > 0 {
		args = append(args, "--skip-outbound-ports", FormatPorts(skipOut))
	}
	return args
}

// validateContainer proves, in CNI mode, that the plugin redirected the
// pod's traffic before anything else runs: with no capability and as a
// uid other than the proxy's, it listens on the proxy's outbound port
// (still free: it runs before the proxy), dials an address that exists
// nowhere and requires the connection to land on its own listener with
// that address as SO_ORIGINAL_DST (docs/redirection.md). If the rules are
// missing it exits 1, so the pod never runs its app unmeshed.
func (in *Injector) validateContainer(skipIn, skipOut []int) corev1.Container {
	args := append([]string{"--check", "--check-method", "probe"}, redirectArgs(skipIn, skipOut)...)
	return corev1.Container{
		Name:            k8slabels.ValidateContainerName,
		Image:           in.cfg.InitImage,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Command:         []string{"/trellis-init"},
		Args:            args,
		Resources:       initResources(),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(ValidateUID),
			RunAsNonRoot:             ptr(true),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// initResources are the short-lived init containers' resources: the
// proxy's default requests, so they never raise the pod's.
func initResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    DefaultProxyCPURequest.DeepCopy(),
			corev1.ResourceMemory: DefaultProxyMemRequest.DeepCopy(),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: DefaultProxyMemLimit.DeepCopy()},
	}
}

func (in *Injector) initContainer(skipIn, skipOut []int) corev1.Container {
	args := redirectArgs(skipIn, skipOut)
	return corev1.Container{
		Name:            k8slabels.InitContainerName,
		Image:           in.cfg.InitImage,
		ImagePullPolicy: in.cfg.ImagePullPolicy,
		Command:         []string{"/trellis-init"},
		Args:            args,
		Resources:       initResources(),
		VolumeMounts:    []corev1.VolumeMount{{Name: XtablesVolumeName, MountPath: "/run"}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			Privileged:               ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func (in *Injector) volumes(opts Options) []corev1.Volume {
	anchors := corev1.Volume{Name: AnchorsVolumeName, VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: AnchorsConfigMap},
			Items:                []corev1.KeyToPath{{Key: AnchorsKey, Path: AnchorsKey}},
		}}}
	if in.cfg.TrustAnchorsPEM != "" {
		anchors.VolumeSource = corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			Items: []corev1.DownwardAPIVolumeFile{{
				Path:     AnchorsKey,
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['" + k8slabels.AnnotationTrustAnchors + "']"},
			}}}}
	}
	vols := []corev1.Volume{
		{Name: TokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: ptr(TokenExpiration), Path: "token",
			}}}}}},
		anchors,
		{Name: StateVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(StateSizeLimit.DeepCopy()),
		}}},
	}
	if opts.Redirect == k8slabels.RedirectInit {
		vols = append(vols, corev1.Volume{Name: XtablesVolumeName, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	return vols
}

func ptr[T any](v T) *T { return &v }
