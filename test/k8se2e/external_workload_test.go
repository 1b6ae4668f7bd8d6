package k8se2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/syncbuf"
	"github.com/trellis-mesh/trellis/test/harness"
)

// The machine outside Kubernetes of the external-workload suite: a network
// namespace on the host (cluster a's node) reached over a veth pair, with
// the cluster's DNS in its resolv.conf (ip netns exec bind-mounts
// /etc/netns/NAME/resolv.conf), as docs/external-workloads.md sets up a VM.
const (
	vmNetns   = "trellis-e2e-vm"
	vmHostIf  = "tvm0"
	vmHostIP  = "172.31.254.1"
	vmIP      = "172.31.254.2"
	vmProxyID = 2102 // the uid the redirection rules exempt
	ewNS      = "e2e-ew"
)

// TestExternalWorkload (suite external-workload, issue 16 item 4): a
// trellis-proxy in a network namespace outside the cluster, standing in
// for a VM, joins the mesh of cluster a with an ExternalWorkload and a
// single-use bootstrap token: meshed pods call it by a Service name and it
// calls them, mTLS both ways (tshark on its link sees no plaintext HTTP),
// its certificate is renewed with no token during the load, a plain-text
// caller is refused, and the spent token cannot be used again.
func TestExternalWorkload(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "external-workload")
	// Workload certificates of 60 s: the proxy renews about every 42 s,
	// so renewals without a token happen under the load.
	c.installIdentity(t, nil)
	c.namespace(t, ewNS)
	c.waitInjector(t)
	vm := newVM(t)
	c.mustRun(t, []byte(ewManifest(c)), "apply", "--server-side", "-f", "-")
	c.rollout(t, ewNS, "echo")

	dir := vm.dir
	token := c.mustTrellis(t, nil, "external-workload", "token", "legacy", "-n", ewNS, "--ttl", "10m")
	tokenFile := vm.writeFile(t, dir, "token", strings.TrimSpace(token))
	anchors := c.mustRun(t, nil, "-n", "trellis-system", "get", "configmap", "trellis-trust-anchors", "-o", `jsonpath={.data.ca-bundle\.crt}`)
	anchorsFile := vm.writeFile(t, dir, "anchors.pem", anchors)

	start := time.Now()
	px := vm.startProxy(t, tokenFile, anchorsFile)
	vm.waitReady(t, px)
	t.Logf("the external workload's proxy is ready %s after start", time.Since(start).Round(100*time.Millisecond))
	c.waitCertified(t, ewNS, "legacy")
	c.waitEndpoint(t, ewNS, "legacy", vmIP)

	t.Run("the spent token is refused", func(t *testing.T) {
		out, err := vm.certifyOnce(t, tokenFile, anchorsFile)
		if err == nil {
			t.Fatalf("a second proxy certified with the spent token:\n%s", out)
		}
		line := grepLines(out, 1, "certify failed")
		t.Logf("the second proxy: %s", line)
		if !strings.Contains(line, "Unauthenticated") {
			t.Errorf("the refusal is not for the token:\n%s", out)
		}
	})

	t.Run("mTLS both ways under load, with renewals", func(t *testing.T) {
		expiry0 := c.ewExpiry(t, ewNS, "legacy")
		cp := &capture{tshark: tsharkBinary(t), dir: t.TempDir(), iface: vmHostIf}
		if cp.tshark != "" {
			cp.start(t)
			t.Cleanup(func() { cp.stop(t) })
		}
		const load = 75 * time.Second
		c.startLoad(t, loadParams{NS: ewNS, Name: "to-vm", Target: "legacy." + ewNS + ".svc.cluster.local:80", Path: "/echo", RPS: 20, Duration: load})
		out := vm.loadgen(t, "echo."+ewNS+".svc.cluster.local:80", "/echo", 20, load)
		in := c.jobLoadResult(t, ewNS, "to-vm", 3*time.Minute)
		t.Logf("pods -> VM: %+v", in)
		t.Logf("VM -> pods: %+v", out)
		for name, r := range map[string]loadResult{"pods -> VM": in, "VM -> pods": out} {
			if r.OK == 0 || r.Failed != 0 || r.OK != r.Sent {
				t.Errorf("%s: %d sent, %d ok, %d failed: want every request answered", name, r.Sent, r.OK, r.Failed)
			}
		}
		// Stopped before the proxies' metrics are scraped: that is plain
		// HTTP on the same link, and not mesh traffic.
		var file string
		if cp.tshark != "" {
			file = cp.stop(t)
		}
		vm.checkPeers(t, c)
		if expiry := c.ewExpiry(t, ewNS, "legacy"); !expiry.After(expiry0) {
			t.Errorf("status.certificateExpiry %s did not move during %s of 60 s certificates: no renewal", expiry, load)
		} else {
			t.Logf("certificate expiry moved from %s to %s", expiry0.Format(time.TimeOnly), expiry.Format(time.TimeOnly))
		}
		if cp.tshark != "" {
			vm.checkNoPlaintext(t, cp, file)
		}
	})

	t.Run("a policy in the cluster sees the VM's identity", func(t *testing.T) {
		c.ewPolicy(t)
		const load = 5 * time.Second
		c.startLoad(t, loadParams{NS: ewNS, Name: "pod-to-echo", Target: "echo." + ewNS + ".svc.cluster.local:80", Path: "/echo", RPS: 10, Duration: load})
		fromVM := vm.loadgen(t, "echo."+ewNS+".svc.cluster.local:80", "/echo", 10, load)
		fromPod := c.jobLoadResult(t, ewNS, "pod-to-echo", 2*time.Minute)
		t.Logf("with echo allowing only %s: from the VM %v, from the pod loadgen %v", ewID("legacy"), fromVM.Statuses, fromPod.Statuses)
		if fromVM.OK == 0 || fromVM.OK != fromVM.Sent {
			t.Errorf("the VM (allowed) got %v", fromVM.Statuses)
		}
		if fromPod.Sent == 0 || fromPod.Statuses["403"] != fromPod.Sent {
			t.Errorf("the pod loadgen (not allowed) got %v, want only 403", fromPod.Statuses)
		}
	})

	t.Run("a plain-text caller is refused", func(t *testing.T) {
		// From the host: not meshed, so it reaches the VM's app only
		// through the proxy's inbound side, which wants a mesh identity.
		cmd := exec.CommandContext(t.Context(), "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "http://"+vmIP+":8080/plain")
		got, err := cmd.Output()
		t.Logf("plain GET http://%s:8080/plain from the host: %s (%v)", vmIP, got, err)
		if err == nil && string(got) != "403" {
			t.Errorf("a plain-text caller got %s from the external workload's app, want 403 or a closed connection", got)
		}
	})
}

func ewID(sa string) string { return "spiffe://cluster.local/ns/" + ewNS + "/sa/" + sa }

// ewPolicy lets only the VM's identity call echo, and waits until echo's
// proxy refuses a plain-text caller from the host (the policy is in force).
func (c *cluster) ewPolicy(t *testing.T) {
	t.Helper()
	c.mustRun(t, []byte(fmt.Sprintf(`apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: echo-http, namespace: %[1]s}
spec:
  podSelector: {matchLabels: {app: echo}}
  port: 8080
  accessPolicy: deny
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo-from-legacy, namespace: %[1]s}
spec:
  targetRef: {group: policy.trellis.io, kind: Server, name: echo-http}
  identities: [%[2]q]
`, ewNS, ewID("legacy"))), "apply", "--server-side", "-f", "-")
	_, ip, _ := c.readyPod(t, ewNS, "app=echo")
	start := time.Now()
	eventually(t, time.Minute, "echo's Server in force", func() error {
		out, _ := exec.CommandContext(t.Context(), "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", "http://"+ip+":8080/echo").Output()
		if string(out) != "403" {
			return fmt.Errorf("a plain GET from the host got %q", out)
		}
		return nil
	})
	t.Logf("echo's Server in force after %s", time.Since(start).Round(100*time.Millisecond))
}

func ewManifest(c *cluster) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, annotations: {trellis.io/inject: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: loadgen, namespace: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      serviceAccountName: echo
      containers:
      - name: app
        image: %[2]s
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --listen=:8080]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: %[1]s}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: %[1]s}
spec:
  selector: {app: legacy}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: workload.trellis.io/v1alpha1
kind: ExternalWorkload
metadata: {name: legacy, namespace: %[1]s, labels: {app: legacy}}
spec:
  serviceAccount: legacy
  addresses: [{ip: %[3]s}]
  ports: [{name: http, port: 8080}]
`, ewNS, c.image("demo-app"), vmIP)
}

// vm is the network namespace standing in for a machine outside the
// cluster, and the processes running in it.
type vm struct {
	bin   string
	dir   string // the token and the trust anchors, readable by the proxy's uid
	procs []*exec.Cmd
}

// newVM makes the namespace, its link to the host and its resolv.conf,
// and removes them all at the end (the host as it was).
func newVM(t *testing.T) *vm {
	t.Helper()
	v := &vm{bin: newClusterBin(t)}
	// Not t.TempDir: its parents are 0700, closed to the proxy's uid.
	dir, err := os.MkdirTemp("", "trellis-e2e-vm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v.dir = dir
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", vmNetns).Run() // left by a killed run
	etc := filepath.Join("/etc/netns", vmNetns)
	t.Cleanup(func() {
		for _, p := range v.procs {
			if p.Process != nil {
				_ = p.Process.Kill()
				_ = p.Wait()
			}
		}
		_ = exec.Command("ip", "netns", "del", vmNetns).Run()
		_ = os.RemoveAll(etc)
	})
	sh("ip", "netns", "add", vmNetns)
	sh("ip", "link", "add", vmHostIf, "type", "veth", "peer", "name", "eth0", "netns", vmNetns)
	sh("ip", "addr", "add", vmHostIP+"/30", "dev", vmHostIf)
	sh("ip", "link", "set", vmHostIf, "up")
	in := func(args ...string) { t.Helper(); sh(append([]string{"ip", "netns", "exec", vmNetns}, args...)...) }
	in("ip", "link", "set", "lo", "up")
	in("ip", "addr", "add", vmIP+"/30", "dev", "eth0")
	in("ip", "link", "set", "eth0", "up")
	in("ip", "route", "add", "default", "via", vmHostIP)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	resolv := "nameserver 10.96.0.10\nsearch " + ewNS + ".svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		t.Fatal(err)
	}
	// The redirection rules of a pod, written by the same program.
	in(filepath.Join(v.bin, "trellis-init"), "--proxy-uid", strconv.Itoa(vmProxyID), "--inbound-port", "4143",
		"--outbound-port", "4140", "--skip-inbound-ports", "4143,4190,4191")
	// The VM's app: the echo server on its address (the proxy's --app-ip).
	v.start(t, "app", nil, filepath.Join(v.bin, "trellis-demo-app"), "--role=echo", "--name=legacy", "--listen="+vmIP+":8080")
	return v
}

// newClusterBin is the directory of the binaries make build wrote.
func newClusterBin(t *testing.T) string {
	t.Helper()
	bin := envOr("TRELLIS_BIN", filepath.Join(repoRoot(), "bin"))
	for _, b := range []string{"trellis-proxy", "trellis-init", "trellis-demo-app"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s: %v (make build)", b, err)
		}
	}
	return bin
}

// start runs argv in the namespace, its output in the test's log at the end.
func (v *vm) start(t *testing.T, name string, env []string, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", vmNetns}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	v.procs = append(v.procs, cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("===== %s (in %s):\n%s", name, vmNetns, lastLines(out.String(), 60))
		}
	})
	return cmd
}

// writeFile writes a file the proxy's uid may read.
func (v *vm) writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, vmProxyID, vmProxyID); err != nil {
		t.Fatal(err)
	}
	return p
}

// proxyEnv is the environment docs/external-workloads.md puts in the
// systemd unit's EnvironmentFile.
func proxyEnv(tokenFile, anchorsFile, admin string) []string {
	return []string{
		"TRELLIS_PROXY_MODE=transparent",
		"TRELLIS_PROXY_CONTROLLER_ADDR=trellis-controller.trellis-system.svc.cluster.local:8086",
		"TRELLIS_PROXY_IDENTITY=spiffe://cluster.local/ns/" + ewNS + "/sa/legacy",
		"TRELLIS_PROXY_EXTERNAL_WORKLOAD=" + ewNS + "/legacy",
		"TRELLIS_PROXY_TOKEN_FILE=" + tokenFile,
		"TRELLIS_PROXY_TRUST_ANCHORS=" + anchorsFile,
		"TRELLIS_PROXY_APP_IP=" + vmIP,
		"TRELLIS_PROXY_INBOUND_ADDR=0.0.0.0:4143",
		"TRELLIS_PROXY_OUTBOUND_ADDR=127.0.0.1:4140",
		"TRELLIS_PROXY_ADMIN_ADDR=" + admin,
		"TRELLIS_PROXY_TAP_ADDR=0.0.0.0:4190",
		"TRELLIS_PROXY_DEFAULT_INBOUND_POLICY=all-authenticated",
		"TRELLIS_PROXY_WORKLOAD=legacy",
	}
}

func (v *vm) startProxy(t *testing.T, tokenFile, anchorsFile string) *exec.Cmd {
	t.Helper()
	return v.start(t, "trellis-proxy", proxyEnv(tokenFile, anchorsFile, "0.0.0.0:4191"),
		"setpriv", "--reuid="+strconv.Itoa(vmProxyID), "--regid="+strconv.Itoa(vmProxyID), "--clear-groups",
		filepath.Join(v.bin, "trellis-proxy"))
}

func (v *vm) waitReady(t *testing.T, px *exec.Cmd) {
	t.Helper()
	eventually(t, 90*time.Second, "the external workload's proxy ready", func() error {
		if px.ProcessState != nil {
			return fmt.Errorf("exited: %v", px.ProcessState)
		}
		out, err := exec.CommandContext(t.Context(), "curl", "-fsS", "--max-time", "3", "http://"+vmIP+":4191/ready").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// certifyOnce starts a second proxy with the same (spent) token on other
// ports and returns its output once it has tried to certify.
func (v *vm) certifyOnce(t *testing.T, tokenFile, anchorsFile string) (string, error) {
	t.Helper()
	env := proxyEnv(tokenFile, anchorsFile, "127.0.0.1:5191")
	env = append(env, "TRELLIS_PROXY_INBOUND_ADDR=127.0.0.1:5143", "TRELLIS_PROXY_OUTBOUND_ADDR=127.0.0.1:5140",
		"TRELLIS_PROXY_TAP_ADDR=127.0.0.1:5190", "TRELLIS_PROXY_MODE=explicit")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", vmNetns, "setpriv", "--reuid="+strconv.Itoa(vmProxyID),
		"--regid="+strconv.Itoa(vmProxyID), "--clear-groups", filepath.Join(v.bin, "trellis-proxy"))
	cmd.Env = append(os.Environ(), env...)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		s := out.String()
		if strings.Contains(s, "certificate installed") {
			return s, nil
		}
		if strings.Contains(s, "certify failed") {
			return s, fmt.Errorf("refused")
		}
	}
	return out.String(), fmt.Errorf("no certificate within 15s")
}

// loadgen runs the demo's load generator in the namespace (as root: its
// connections are redirected through the proxy) and returns its result.
func (v *vm) loadgen(t *testing.T, target, path string, rps int, d time.Duration) loadResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d+time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", vmNetns, filepath.Join(v.bin, "trellis-demo-app"),
		"--role=loadgen", "--target="+target, "--path="+path, "--rps="+strconv.Itoa(rps), "--duration="+d.String()).Output()
	if err != nil {
		t.Fatalf("loadgen in %s: %v\n%s", vmNetns, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var r loadResult
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &r) == nil {
			return r
		}
	}
	t.Fatalf("no result line in the loadgen's output:\n%s", out)
	return loadResult{}
}

// checkPeers: each side's proxy saw the other's identity over mesh TLS.
func (v *vm) checkPeers(t *testing.T, c *cluster) {
	t.Helper()
	td := ewID("")
	vmm, err := harness.Scrape(t.Context(), vmIP+":4191")
	if err != nil {
		t.Fatalf("the external workload's proxy metrics: %v", err)
	}
	in := vmm.Value("trellis_requests_total", map[string]string{"direction": "inbound", "tls": "true", "peer_identity": td + "loadgen"})
	out := vmm.Value("trellis_requests_total", map[string]string{"direction": "outbound", "tls": "true", "peer_identity": td + "echo"})
	plain := vmm.Value("trellis_requests_total", map[string]string{"direction": "inbound", "tls": "false"})
	t.Logf("the VM's proxy: %.0f inbound requests from %sloadgen over mTLS, %.0f outbound to %secho over mTLS, %.0f inbound in plain text", in, td, out, td, plain)
	if in == 0 || out == 0 {
		t.Errorf("the VM's proxy did not see both peers over mesh TLS:\n%s", vmm.Series("trellis_requests_total"))
	}
	echo := c.pods(t, ewNS, "app=echo")
	if len(echo) == 0 {
		t.Fatal("no echo pod")
	}
	em, err := c.metrics(t.Context(), ewNS, echo[0].Name, 4191)
	if err != nil {
		t.Fatal(err)
	}
	fromVM := em.Value("trellis_requests_total", map[string]string{"direction": "inbound", "tls": "true", "peer_identity": td + "legacy"})
	t.Logf("the echo pod's proxy: %.0f inbound requests from %slegacy over mTLS", fromVM, td)
	if fromVM == 0 {
		t.Errorf("the echo pod's proxy saw no request from the VM's identity:\n%s", em.Series("trellis_requests_total"))
	}
	renewals := vmm.Value("trellis_identity_certify_total", map[string]string{"result": "ok"})
	t.Logf("the VM's proxy: %.0f certificates obtained", renewals)
	if renewals < 2 {
		t.Errorf("the VM's proxy obtained %.0f certificates: want its first and at least one renewal", renewals)
	}
}

// checkNoPlaintext: the VM's link carried mesh TLS and no plaintext HTTP.
func (v *vm) checkNoPlaintext(t *testing.T, cp *capture, file string) {
	t.Helper()
	asTLS := []string{"-d", "tcp.port==8080,tls", "-d", "tcp.port==4143,tls"}
	all := cp.count(t, file, "tcp")
	payload := cp.count(t, file, "tcp.len > 0 && !(tcp.port == 8086)")
	plain := cp.count(t, file, plaintextHTTP)
	plainAs := cp.count(t, file, plaintextHTTP, asTLS...)
	appData := cp.count(t, file, "(tls.record.opaque_type == 23 || tls.record.content_type == 23)", asTLS...)
	t.Logf("tshark on %s: %d TCP packets, %d with payload (control plane excepted), %d plaintext HTTP frames (%d read as TLS), %d TLS application-data frames",
		cp.iface, all, payload, plain, plainAs, appData)
	if payload == 0 || appData == 0 {
		t.Errorf("the capture holds no mesh TLS traffic: it proves nothing")
	}
	if plain != 0 || plainAs != 0 {
		t.Errorf("%d frames of plaintext HTTP on the VM's link", max(plain, plainAs))
	}
}

// waitCertified waits for the ExternalWorkload's Certified condition.
func (c *cluster) waitCertified(t *testing.T, ns, name string) {
	t.Helper()
	start := time.Now()
	c.mustRun(t, nil, "-n", ns, "wait", "--for=condition=Certified", "externalworkload/"+name, "--timeout=2m")
	t.Logf("ExternalWorkload %s/%s Certified after %s", ns, name, time.Since(start).Round(100*time.Millisecond))
}

// waitEndpoint waits until the Service's EndpointSlices hold addr, ready.
func (c *cluster) waitEndpoint(t *testing.T, ns, svc, addr string) {
	t.Helper()
	eventually(t, time.Minute, "the external workload in "+svc+"'s endpoints", func() error {
		out, err := c.run(t.Context(), nil, "-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name="+svc,
			"-o", `jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions.ready} {.targetRef.kind}{"\n"}{end}`)
		if err != nil {
			return err
		}
		if !strings.Contains(out, addr+" true ExternalWorkload") {
			return fmt.Errorf("endpoints: %q", out)
		}
		return nil
	})
}

func (c *cluster) ewExpiry(t *testing.T, ns, name string) time.Time {
	t.Helper()
	out := c.mustRun(t, nil, "-n", ns, "get", "externalworkload", name, "-o", "jsonpath={.status.certificateExpiry}")
	ts, err := time.Parse(time.RFC3339, strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("status.certificateExpiry %q: %v", out, err)
	}
	return ts
}
