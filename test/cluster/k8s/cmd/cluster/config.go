package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// writeConfigs lays out run/: certificates, kubeconfigs and the configs of
// containerd, the CNI network and the kubelet.
func (h *harness) writeConfigs(st *state) error {
	for _, d := range []string{"etcd", "logs", "pids", "kubelet", "pod-logs", "containerd/root", "containerd/state", "containerd/opt", "runc", "cni/net.d", "cni/ipam", "kube-controller-manager", "kube-scheduler"} {
		if err := os.MkdirAll(h.runDir(d), 0o755); err != nil {
			return err
		}
	}
	p, err := newPKI(h.runDir("pki"))
	if err != nil {
		return err
	}
	nodeIP := net.ParseIP(st.NodeIP)
	certs := []struct {
		name, cn string
		orgs     []string
		dns      []string
		ips      []net.IP
		server   bool
	}{
		{"apiserver", "kube-apiserver", nil,
			[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", st.NodeName},
			[]net.IP{net.ParseIP(h.p.kubernetesSvc), net.ParseIP("127.0.0.1"), nodeIP}, true},
		{"admin", "trellis-cluster-admin", []string{"system:masters"}, nil, nil, false},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, false},
		{"kube-controller-manager", "system:kube-controller-manager", nil, nil, nil, false},
		{"kube-scheduler", "system:kube-scheduler", nil, nil, nil, false},
		{"kubelet", "system:node:" + st.NodeName, []string{"system:nodes"}, nil, nil, false},
		{"kube-proxy", "system:kube-proxy", nil, nil, nil, false},
	}
	for _, c := range certs {
		if err := p.issue(c.name, c.cn, c.orgs, c.dns, c.ips, c.server); err != nil {
			return err
		}
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	if err := writeFrontProxyPKI(h.runDir("pki")); err != nil {
		return err
	}
	local := "https://" + h.p.apiHost() + ":" + apiPort
	for _, k := range []struct{ file, server, cert string }{
		{"admin.kubeconfig", local, "admin"},
		{"kube-controller-manager.kubeconfig", local, "kube-controller-manager"},
		{"kube-scheduler.kubeconfig", local, "kube-scheduler"},
		{"kubelet.kubeconfig", local, "kubelet"},
		{"kube-proxy.kubeconfig", local, "kube-proxy"},
	} {
		if err := p.kubeconfig(h.runDir(k.file), k.server, k.cert); err != nil {
			return err
		}
	}

	files := map[string]string{
		"containerd/config.toml": h.containerdConfig(),
		"cni/net.d/10-trellis-cluster.conflist": fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "hairpinMode": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, cniNetwork, bridgeName, h.p.podCIDR, h.runDir("cni", "ipam")),
		// Pods with dnsPolicy Default get this, not the host's resolver.
		"resolv.conf":         "# trellis-cluster: pods have no upstream resolver\noptions ndots:1\n",
		"kubelet-config.yaml": h.kubeletConfig(),
	}
	for name, content := range files {
		if err := os.WriteFile(h.runDir(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
oom_score = 0

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails
  # with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
    max_conf_num = 1
`,
		h.runDir("containerd", "root"), h.runDir("containerd", "state"),
		h.runDir("containerd", "containerd.sock"), h.runDir("containerd", "containerd.sock.ttrpc"),
		h.runDir("containerd", "opt"), pauseImage, h.runDir("runc"), h.runDir("cni", "net.d"))
}

func (h *harness) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %q
authorization:
  mode: Webhook
# cgroup v1 host without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
# Each cluster's pods under a root of its own (profile.go): a kubelet
# kills the pods it finds in its root that it does not know.
cgroupRoot: %q
clusterDomain: cluster.local
clusterDNS: [%q]
resolvConf: %q
podLogsDir: %q
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
rotateCertificates: false
serializeImagePulls: false
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
# Secret and ConfigMap volumes are refreshed on each pod sync: every 10 s
# here instead of every minute, so the identity-rotation suites do not
# wait a minute per stage. Trellis itself needs no such setting.
syncFrequency: 10s
`, h.runDir("pki", "ca.crt"), h.runDir("containerd", "containerd.sock"), h.p.cgroupRoot, h.p.dnsServiceIP, h.runDir("resolv.conf"), h.runDir("pod-logs"))
}

// corednsManifest is CoreDNS serving cluster.local only (no forward: these
// machines have no upstream resolver for pods).
func corednsManifest(dnsServiceIP string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      terminationGracePeriodSeconds: 1
      containers:
      - name: coredns
        image: %s
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /health, port: 8080}
        resources:
          requests: {cpu: 50m, memory: 50Mi}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: %s
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`, corednsImage, dnsServiceIP)
}

var _ = filepath.Join
