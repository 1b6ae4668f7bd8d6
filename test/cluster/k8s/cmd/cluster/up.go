package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	etcdClientURL = "http://127.0.0.1:2379"
	etcdPeerURL   = "http://127.0.0.1:2380"
	apiPort       = "6443"
	cniNetwork    = "trellis-cluster"
	bridgeName    = "cni0"
)

// The components started by `up`, in order; `down` stops them in reverse.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet", "kube-proxy"}

// Host paths the cluster may create outside the harness directory; `up`
// records which existed so `down` removes only what it made.
var hostPaths = []string{"/var/lib/cni", "/run/containerd", "/var/log/containers", "/var/log/pods", "/var/run/netns"}

// Kernel settings of the cluster's network namespace that the kubelet,
// kube-proxy and `up` change; `down` puts back what it found. The
// machine-wide ones are in machine.go.
var sysctls = []string{
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

// state is run/state.json: what `down` needs to undo `up`.
type state struct {
	NodeName    string            `json:"nodeName"`
	NodeIP      string            `json:"nodeIP"`
	K8sBinary   string            `json:"k8sBinary"`
	HostPaths   map[string]bool   `json:"hostPaths"`   // existed before up
	Sysctls     map[string]string `json:"sysctls"`     // values before up
	Netns       []string          `json:"netns"`       // /var/run/netns entries before up
	NftTables   []string          `json:"nftTables"`   // nft tables before up
	NetnsShared bool              `json:"netnsShared"` // up made /run/netns a shared mount (netnsdir.go)
	BridgeExist bool              `json:"bridgeExisted"`
}

func (h *harness) kubeconfigPath() string { return h.runDir("admin.kubeconfig") }

func (h *harness) loadState() (*state, error) {
	b, err := os.ReadFile(h.runDir("state.json"))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", h.runDir("state.json"), err)
	}
	return &st, nil
}

func (h *harness) saveState(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(h.runDir("state.json"), b, 0o644)
}

// isUp: every component process alive and the API server ready.
func (h *harness) isUp(ctx context.Context) (bool, string) {
	for _, c := range components {
		if h.pidOf(c) == 0 {
			return false, c + " is not running"
		}
	}
	if err := h.apiGet(ctx, "/readyz", nil); err != nil {
		return false, err.Error()
	}
	return true, ""
}

func (h *harness) status(ctx context.Context) error {
	if _, err := os.Stat(h.runDir("state.json")); err != nil {
		fmt.Println("down")
		return errors.New("cluster is down")
	}
	ok, why := h.isUp(ctx)
	if !ok {
		fmt.Println("broken:", why, "(run `make cluster-down`)")
		return errors.New("cluster is not healthy")
	}
	st, err := h.loadState()
	if err != nil {
		return err
	}
	var node nodeObj
	if err := h.apiGet(ctx, "/api/v1/nodes/"+st.NodeName, &node); err != nil {
		return err
	}
	fmt.Printf("up: node %s ready=%v\nkubeconfig: %s\n", st.NodeName, node.ready(), h.kubeconfigPath())
	return nil
}

func (h *harness) up(ctx context.Context) error {
	if _, err := os.Stat(h.runDir("state.json")); err == nil {
		if ok, why := h.isUp(ctx); ok {
			h.log.Info("already up")
			fmt.Println(h.kubeconfigPath())
			return nil
		} else {
			h.log.Warn("found a half-up cluster; tearing it down first", "reason", why)
		}
		if err := h.teardown(ctx); err != nil {
			return fmt.Errorf("cleaning the previous cluster: %w", err)
		}
	}
	t0 := time.Now()
	if !h.p.isolated { // an isolated cluster's upIsolated joined
		if err := joinMachine(h.p.name); err != nil {
			return err
		}
	}
	if err := ensurePackages(ctx, h); err != nil {
		return err
	}
	bins, err := h.buildAll(ctx)
	if err != nil {
		return err
	}
	h.log.Info("binaries ready", "took", time.Since(t0).Round(100*time.Millisecond))

	if err := h.start(ctx, bins); err != nil {
		h.log.Error("up failed; logs are in "+h.runDir("logs")+"; tearing down", "err", err)
		if derr := h.teardown(context.WithoutCancel(ctx)); derr != nil {
			h.log.Error("teardown after failed up", "err", derr)
		}
		return err
	}
	fmt.Println(h.kubeconfigPath())
	return nil
}

func (h *harness) start(ctx context.Context, bins binaries) error {
	t0 := time.Now()
	st, err := h.snapshotHost(ctx)
	if err != nil {
		return err
	}
	st.K8sBinary = bins.k8s
	if err := os.MkdirAll(h.runDir(), 0o755); err != nil {
		return err
	}
	if err := h.saveState(st); err != nil {
		return err
	}
	if err := h.writeConfigs(st); err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable ip_forward: %w", err)
	}

	k8s := bins.k8s
	pki := h.runDir("pki")
	p := func(n, ext string) string { return filepath.Join(pki, n+"."+ext) }

	if err := h.spawn("etcd", k8s, []string{"etcd", "--data-dir", h.runDir("etcd"),
		"--listen-client-url", etcdClientURL, "--listen-peer-url", etcdPeerURL}); err != nil {
		return err
	}
	if err := h.spawn("kube-apiserver", k8s, append([]string{"kube-apiserver",
		"--etcd-servers=" + etcdClientURL,
		"--bind-address=0.0.0.0", "--secure-port=" + apiPort, "--advertise-address=" + st.NodeIP,
		"--tls-cert-file=" + p("apiserver", "crt"), "--tls-private-key-file=" + p("apiserver", "key"),
		"--client-ca-file=" + p("ca", "crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p("sa", "pub"), "--service-account-signing-key-file=" + p("sa", "key"),
		"--service-cluster-ip-range=" + h.p.serviceCIDR,
		"--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client", "crt"),
		"--kubelet-client-key=" + p("apiserver-kubelet-client", "key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--profiling=false", "--v=1",
	}, aggregationFlags(pki)...)); err != nil {
		return err
	}
	if err := poll(ctx, 60*time.Second, 200*time.Millisecond, "kube-apiserver", func() (bool, error) {
		if h.pidOf("kube-apiserver") == 0 || h.pidOf("etcd") == 0 {
			return false, errors.New("kube-apiserver or etcd exited: see " + h.runDir("logs"))
		}
		err := h.apiGet(ctx, "/readyz", nil)
		return err == nil, err
	}); err != nil {
		return err
	}
	h.log.Info("API server ready", "after", time.Since(t0).Round(100*time.Millisecond))

	common := func(name string) []string {
		kc := h.runDir(name + ".kubeconfig")
		return []string{"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"}
	}
	if err := h.spawn("kube-controller-manager", k8s, append([]string{"kube-controller-manager",
		"--service-account-private-key-file=" + p("sa", "key"), "--root-ca-file=" + p("ca", "crt"),
		"--cluster-signing-cert-file=" + p("ca", "crt"), "--cluster-signing-key-file=" + p("ca", "key"),
		"--use-service-account-credentials=true", "--service-cluster-ip-range=" + h.p.serviceCIDR,
		"--cert-dir=" + h.runDir("kube-controller-manager"),
	}, common("kube-controller-manager")...)); err != nil {
		return err
	}
	if err := h.spawn("kube-scheduler", k8s, append([]string{"kube-scheduler",
		"--cert-dir=" + h.runDir("kube-scheduler")}, common("kube-scheduler")...)); err != nil {
		return err
	}

	if st.NetnsShared, err = shareNetnsDir(); err != nil {
		return err
	}
	if err := h.saveState(st); err != nil {
		return err
	}
	if err := h.spawn("containerd", "/usr/bin/containerd", []string{"--config", h.runDir("containerd", "config.toml")}); err != nil {
		return err
	}
	if err := poll(ctx, 30*time.Second, 100*time.Millisecond, "containerd", func() (bool, error) {
		if h.pidOf("containerd") == 0 {
			return false, errors.New("containerd exited: see " + h.runDir("logs", "containerd.log"))
		}
		_, err := h.ctr(ctx, "version")
		return err == nil, err
	}); err != nil {
		return err
	}
	// The extra images (extras.go) only if already built: building them
	// is extras' job, off the critical path.
	extra, err := h.extraTars(ctx, false)
	if err != nil {
		return err
	}
	imports := append([]string{bins.pauseTar, bins.corednsTar, bins.smokeTar}, extra...)
	product, _ := filepath.Glob(filepath.Join(h.repoBin, "images", "*.tar"))
	imports = append(imports, product...)
	if err := h.importImages(ctx, imports); err != nil {
		return err
	}

	if err := h.p.makeCgroupRoot(); err != nil {
		return err
	}
	if err := h.spawn("kubelet", k8s, []string{"kubelet",
		"--config=" + h.runDir("kubelet-config.yaml"),
		"--kubeconfig=" + h.runDir("kubelet.kubeconfig"),
		"--root-dir=" + h.runDir("kubelet"),
		"--cert-dir=" + h.runDir("kubelet", "pki"),
		"--node-ip=" + st.NodeIP,
		"--hostname-override=" + st.NodeName,
		"--v=1",
	}); err != nil {
		return err
	}
	if err := h.spawn("kube-proxy", k8s, []string{"kube-proxy",
		"--kubeconfig=" + h.runDir("kube-proxy.kubeconfig"),
		"--proxy-mode=iptables", "--cluster-cidr=" + h.p.clusterCIDR,
		"--hostname-override=" + st.NodeName,
		// Zero leaves the host's conntrack sysctls alone.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
		"--iptables-localhost-nodeports=false",
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
		"--v=1",
	}); err != nil {
		return err
	}
	if err := poll(ctx, 90*time.Second, 250*time.Millisecond, "node "+st.NodeName, func() (bool, error) {
		if h.pidOf("kubelet") == 0 {
			return false, errors.New("kubelet exited: see " + h.runDir("logs", "kubelet.log"))
		}
		var n nodeObj
		if err := h.apiGet(ctx, "/api/v1/nodes/"+st.NodeName, &n); err != nil {
			return false, err
		}
		return n.ready(), nil
	}); err != nil {
		return err
	}
	h.log.Info("node Ready", "node", st.NodeName, "after", time.Since(t0).Round(100*time.Millisecond))

	if _, err := h.kubectlApply(ctx, corednsManifest(h.p.dnsServiceIP)); err != nil {
		return fmt.Errorf("CoreDNS: %w", err)
	}
	if err := h.waitDeployment(ctx, "kube-system", "coredns", 1, 90*time.Second); err != nil {
		return err
	}
	h.log.Info("cluster up (CoreDNS ready)", "after", time.Since(t0).Round(100*time.Millisecond), "kubeconfig", h.kubeconfigPath())
	return nil
}

// snapshotHost records the host state `down` restores.
func (h *harness) snapshotHost(ctx context.Context) (*state, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	ip, err := nodeIP(ctx)
	if err != nil {
		return nil, err
	}
	st := &state{NodeName: strings.ToLower(host), NodeIP: ip, HostPaths: map[string]bool{}, Sysctls: map[string]string{}}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		st.HostPaths[p] = err == nil
	}
	for _, s := range sysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			st.Sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		st.Netns = append(st.Netns, e.Name())
	}
	st.NftTables = nftTables(ctx)
	_, err = net.InterfaceByName(bridgeName)
	st.BridgeExist = err == nil
	if st.BridgeExist {
		return nil, fmt.Errorf("a %s link already exists on this host: another cluster? remove it first", bridgeName)
	}
	return st, nil
}

// nodeIP is the source address of the default route (no packet is sent).
func nodeIP(ctx context.Context) (string, error) {
	out, err := run(ctx, "ip", "-4", "route", "get", "1.1.1.1")
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "src" {
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("no source address in %q", out)
}

func nftTables(ctx context.Context) []string {
	out, err := run(ctx, "nft", "list", "tables")
	if err != nil {
		return nil
	}
	var t []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "table ") {
			t = append(t, strings.TrimPrefix(l, "table "))
		}
	}
	sort.Strings(t)
	return t
}

// ensurePackages installs the Debian packages of the node side if missing.
func ensurePackages(ctx context.Context, h *harness) error {
	need := map[string]string{
		"/usr/bin/containerd":         "containerd",
		"/usr/bin/ctr":                "containerd",
		"/usr/sbin/runc":              "runc",
		"/usr/lib/cni/bridge":         "containernetworking-plugins",
		"/usr/sbin/iptables":          "iptables",
		"/usr/sbin/conntrack":         "conntrack",
		"/usr/bin/socat":              "socat",
		"/usr/sbin/ethtool":           "ethtool",
		"/usr/sbin/xtables-nft-multi": "iptables",
		"/usr/sbin/nft":               "nftables",
	}
	set := map[string]bool{}
	for path, pkg := range need {
		if _, err := os.Stat(path); err != nil {
			set[pkg] = true
		}
	}
	if len(set) == 0 {
		return nil
	}
	var pkgs []string
	for p := range set {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	h.log.Info("installing Debian packages", "packages", pkgs)
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("the cluster harness needs the Debian packages %s (as root: apt-get install %s); installing them failed: %w: %s",
			strings.Join(pkgs, ", "), strings.Join(pkgs, " "), err, lastLines(string(out), 10))
	}
	return nil
}

// apiClient talks to the API server as the cluster admin.
func (h *harness) apiClient() (*http.Client, error) {
	pki := h.runDir("pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("bad CA certificate")
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}},
	}, nil
}

func (h *harness) apiGet(ctx context.Context, path string, out any) error {
	c, err := h.apiClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+h.p.apiHost()+":"+apiPort+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, lastLines(string(body), 5))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

type nodeObj struct {
	Status struct {
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func (n nodeObj) ready() bool {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// kubectl runs the multi-call binary's kubectl as the cluster admin.
func (h *harness) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	st, err := h.loadState()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, st.K8sBinary, append([]string{"kubectl", "--kubeconfig=" + h.kubeconfigPath()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 10))
	}
	return string(out), nil
}

func (h *harness) kubectlApply(ctx context.Context, manifest string) (string, error) {
	return h.kubectl(ctx, manifest, "apply", "-f", "-")
}

func (h *harness) waitDeployment(ctx context.Context, ns, name string, replicas int, timeout time.Duration) error {
	return poll(ctx, timeout, 250*time.Millisecond, "deployment "+ns+"/"+name, func() (bool, error) {
		var d struct {
			Status struct {
				ReadyReplicas int `json:"readyReplicas"`
			} `json:"status"`
		}
		if err := h.apiGet(ctx, "/apis/apps/v1/namespaces/"+ns+"/deployments/"+name, &d); err != nil {
			return false, err
		}
		return d.Status.ReadyReplicas >= replicas, nil
	})
}

func (h *harness) ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "ctr", append([]string{"--address", h.runDir("containerd", "containerd.sock"), "-n", "k8s.io"}, args...)...)
}

func (h *harness) importImages(ctx context.Context, tars []string) error {
	for _, t := range tars {
		if _, err := h.ctr(ctx, "images", "import", t); err != nil {
			return fmt.Errorf("import %s: %w", t, err)
		}
		h.log.Debug("imported", "image", t)
	}
	return nil
}
