package k8se2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/test/harness"
)

// TestInject is the suite "inject": on a fresh install, the demo
// application in a namespace with trellis.io/inject: enabled comes up with
// every pod meshed, and the proxies' own metrics prove every edge is mutual
// TLS with the expected SPIFFE identities and no failed request. It prints
// the time from trellis install to the first verified mTLS request and the
// controller's memory with the demo running.
func TestInject(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-inject"
	start := time.Now()
	c.sharedInstall(t)
	c.deployDemo(t, ns, 1)
	// tshark on web's host-side veth from before the first request, so
	// the capture holds the mesh connections' handshakes too.
	capture := c.startCapture(t, ns, "app=web")
	c.startLoad(t, loadParams{NS: ns, Name: "loadgen", Target: "web." + ns + ".svc.cluster.local:80", RPS: 10})
	c.rollout(t, ns, "loadgen")

	pods := map[string]string{} // app -> pod name
	for _, p := range c.pods(t, ns, "") {
		if err := meshed(p, c.tag); err != nil {
			t.Error(err)
		}
		pods[p.Labels["app"]] = p.Name
	}
	if t.Failed() {
		t.FailNow()
	}
	c.checkEdges(t, ns, pods, start)
	capture.checkNoPlaintext(t, c, ns)

	// With the demo meshed, trellis check is entirely green.
	r := c.check(t)
	if !r.Success || r.Summary.Warn+r.Summary.Fail+r.Summary.Skip != 0 {
		t.Errorf("trellis check with the demo running is not all green: %+v", r.Summary)
	}
	logControllerMemory(t, c)

	// Control: the same capture method does see plaintext HTTP when the
	// caller is not meshed (after the metric checks: web's proxy counts
	// these requests as plaintext).
	capture.checkControl(t, c, ns)

	c.checkUnmeshedPodReported(t, ns+"-late")
}

// checkUnmeshedPodReported makes the classic mistake, a namespace annotated
// for injection after its pods started, and requires trellis check to fail
// naming the pod until it is gone.
func (c *cluster) checkUnmeshedPodReported(t *testing.T, ns string) {
	t.Helper()
	c.namespace(t, ns)
	c.mustRun(t, nil, "create", "namespace", ns)
	pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"early","namespace":%q},
"spec":{"containers":[{"name":"app","image":%q,"imagePullPolicy":"IfNotPresent",
"args":["--role=authors","--listen=0.0.0.0:8080","--proxy="]}]}}`, ns, c.image("demo-app"))
	c.mustRun(t, []byte(pod), "apply", "--server-side", "-f", "-")
	c.mustRun(t, nil, "annotate", "namespace", ns, "trellis.io/inject=enabled")
	unmeshed := func(r checkReport) (string, string) {
		for _, ch := range r.Checks {
			if ch.Name == "no unmeshed pods where injection is enabled" {
				return ch.Status, ch.Message
			}
		}
		t.Fatal("trellis check has no unmeshed-pods check")
		return "", ""
	}
	r := c.check(t, "--proxy", "-n", ns)
	if st, msg := unmeshed(r); st != "fail" || !strings.Contains(msg, ns+"/early") || r.Success {
		t.Errorf("pod started before its namespace was annotated: unmeshed-pods check %s %q (success=%v), want a failure naming %s/early", st, msg, r.Success, ns)
	}
	c.mustRun(t, nil, "-n", ns, "delete", "pod", "early", "--wait=true")
	if st, msg := unmeshed(c.check(t, "--proxy", "-n", ns)); st != "ok" {
		t.Errorf("after deleting the unmeshed pod: unmeshed-pods check %s %q, want ok", st, msg)
	}
}

// checkEdges waits for the first verified mTLS request through the load
// generator's proxy, lets traffic flow, then requires every proxy of the
// demo (pods: app -> pod name) to show only mutual-TLS responses with the
// expected SPIFFE peer on each edge and no failure.
func (c *cluster) checkEdges(t *testing.T, ns string, pods map[string]string, start time.Time) {
	t.Helper()
	id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	// The first request the load generator's proxy saw answered over mTLS
	// by a peer proving web's identity.
	eventually(t, 2*time.Minute, "first verified mTLS request", func() error {
		m, err := c.metrics(t.Context(), ns, pods["loadgen"], 4191)
		if err != nil {
			return err
		}
		if m.Value("trellis_responses_total", map[string]string{"direction": "outbound", "tls": "true", "peer_identity": id("web"), "classification": "success"}) == 0 {
			return errors.New("no successful mTLS response yet:\n" + m.Series("trellis_responses_total"))
		}
		return nil
	})
	t.Logf("time from trellis install to the first verified mTLS request: %s", time.Since(start).Round(100*time.Millisecond))

	// Let traffic flow on every edge, then read every proxy.
	time.Sleep(10 * time.Second)
	type edge struct{ app, direction, peer string }
	want := []edge{
		{"loadgen", "outbound", id("web")},
		{"web", "inbound", id("loadgen")},
		{"web", "outbound", id("books")},
		{"books", "inbound", id("web")},
		{"books", "outbound", id("authors")},
		{"authors", "inbound", id("books")},
	}
	for app, pod := range pods {
		m, err := c.metrics(t.Context(), ns, pod, 4191)
		if err != nil {
			t.Fatalf("metrics of %s: %v", pod, err)
		}
		for _, e := range want {
			if e.app != app {
				continue
			}
			ok := m.Value("trellis_responses_total", map[string]string{"direction": e.direction, "tls": "true", "peer_identity": e.peer, "classification": "success"})
			if ok == 0 {
				t.Errorf("%s: no successful %s mTLS response with peer %s:\n%s", app, e.direction, e.peer, m.Series("trellis_responses_total"))
			}
		}
		// Nothing else: no plain-text series, no unexpected peer, no
		// failure, no request the proxy answered itself, no bad handshake.
		allowed := map[string]bool{}
		for _, e := range want {
			if e.app == app {
				allowed[e.direction+" "+e.peer] = true
			}
		}
		var total, failed float64
		for _, s := range series(m, "trellis_responses_total") {
			total += s.value
			if s.labels["tls"] != "true" || !allowed[s.labels["direction"]+" "+s.labels["peer_identity"]] {
				t.Errorf("%s: unexpected series %v = %g", app, s.labels, s.value)
			}
			if s.labels["classification"] != "success" {
				failed += s.value
			}
		}
		if failed > 0 {
			t.Errorf("%s: %g of %g responses failed:\n%s", app, failed, total, m.Series("trellis_responses_total"))
		}
		for _, name := range []string{"trellis_request_errors_total", "trellis_tls_handshake_errors_total"} {
			if v := m.Value(name, nil); v != 0 {
				t.Errorf("%s: %s = %g:\n%s", app, name, v, m.Series(name))
			}
		}
		t.Logf("%s (%s): %g responses, success rate %.1f%%, all mTLS", app, pod, total, 100*(total-failed)/max(total, 1))
	}
}

// logControllerMemory prints the controller's resident memory from its
// own /metrics.
func logControllerMemory(t *testing.T, c *cluster) {
	t.Helper()
	pod := c.controllerPod(t)
	m, err := c.metrics(t.Context(), "trellis-system", pod, 9996)
	if err != nil {
		t.Errorf("controller metrics: %v", err)
		return
	}
	rss, ok := m.Sum("process_resident_memory_bytes", nil)
	if !ok {
		t.Errorf("controller has no process_resident_memory_bytes")
		return
	}
	heap := m.Value("go_memstats_heap_inuse_bytes", nil)
	t.Logf("controller %s memory: RSS %.1f MiB, Go heap in use %.1f MiB", pod, rss/(1<<20), heap/(1<<20))
}

type sample struct {
	labels map[string]string
	value  float64
}

// series lists a counter's or gauge's samples with their labels.
func series(m harness.Metrics, name string) []sample {
	f, ok := m[name]
	if !ok {
		return nil
	}
	var out []sample
	for _, mm := range f.GetMetric() {
		s := sample{labels: map[string]string{}, value: metricValue(mm)}
		for _, lp := range mm.GetLabel() {
			s.labels[lp.GetName()] = lp.GetValue()
		}
		out = append(out, s)
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// capture is tshark writing a pcap of one pod's TCP on the host side of
// its veth, where every packet between that pod and its peers passes
// (a Linux bridge does not show forwarded frames on the bridge device).
type capture struct {
	tshark string // "" when tshark is unavailable: checks skip
	pod    corev1.Pod
	iface  string
	dir    string
	cur    *runningCapture
	files  []string
}

type runningCapture struct {
	cmd    *exec.Cmd
	file   string
	stderr *bytes.Buffer
	done   chan error
}

// tsharkBinary finds tshark, installing Debian's when missing and apt is
// there (the suites run as root); "" means the capture checks must skip.
func tsharkBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("tshark"); err == nil {
		return p
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Logf("tshark is missing and apt-get is unavailable: the packet capture checks are skipped")
		return ""
	}
	t.Log("tshark is missing: apt-get install -y tshark")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "tshark")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get install tshark: %v\n%s", err, out)
	}
	p, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatalf("tshark not found after installing it: %v", err)
	}
	return p
}

// startCapture starts tshark on the host-side veth of the running pod of
// ns matching selector.
func (c *cluster) startCapture(t *testing.T, ns, selector string) *capture {
	t.Helper()
	cp := &capture{tshark: tsharkBinary(t), dir: t.TempDir()}
	if cp.tshark == "" {
		return cp
	}
	for _, p := range c.pods(t, ns, selector) {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			cp.pod = p
		}
	}
	if cp.pod.Name == "" {
		t.Fatalf("no running pod %s in %s to capture on", selector, ns)
	}
	iface, err := hostVeth(t.Context(), cp.pod.Status.PodIP)
	if err != nil {
		t.Fatalf("host side of %s's veth: %v", cp.pod.Name, err)
	}
	cp.iface = iface
	t.Logf("capturing TCP of %s (%s) on its host veth %s", cp.pod.Name, cp.pod.Status.PodIP, iface)
	cp.start(t)
	t.Cleanup(func() { cp.stop(t) })
	return cp
}

func (cp *capture) start(t *testing.T) {
	t.Helper()
	file := filepath.Join(cp.dir, fmt.Sprintf("capture-%d.pcap", len(cp.files)))
	var stderr bytes.Buffer
	cmd := exec.Command(cp.tshark, "-i", cp.iface, "-f", "tcp", "-w", file, "-q")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("tshark: %v", err)
	}
	rc := &runningCapture{cmd: cmd, file: file, stderr: &stderr, done: make(chan error, 1)}
	go func() { rc.done <- cmd.Wait() }()
	cp.cur = rc
	cp.files = append(cp.files, file)
	// dumpcap creates the file once it captures.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(file); err == nil {
			return
		}
		select {
		case err := <-rc.done:
			t.Fatalf("tshark exited before capturing: %v\n%s", err, stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cp.stop(t)
			t.Fatalf("tshark did not start capturing within 30s:\n%s", stderr.String())
		}
	}
}

// stop ends the running capture (SIGINT makes tshark flush and close the
// file) and returns its file.
func (cp *capture) stop(t *testing.T) string {
	t.Helper()
	rc := cp.cur
	if rc == nil {
		return ""
	}
	cp.cur = nil
	_ = rc.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-rc.done:
	case <-time.After(15 * time.Second):
		_ = rc.cmd.Process.Kill()
		<-rc.done
		t.Errorf("tshark did not stop on SIGINT:\n%s", rc.stderr.String())
	}
	return rc.file
}

// count is the number of frames of file matching a display filter.
func (cp *capture) count(t *testing.T, file, filter string, extra ...string) int {
	t.Helper()
	return len(cp.fields(t, file, filter, "frame.number", extra...))
}

// fields prints one field of every frame matching filter.
func (cp *capture) fields(t *testing.T, file, filter, field string, extra ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	args := append([]string{"-r", file, "-Y", filter, "-T", "fields", "-e", field}, extra...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, cp.tshark, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var out []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// plaintextHTTP is a display filter for HTTP in the clear: what the
// dissectors recognise, and the bytes of an HTTP/1 message or the HTTP/2
// preface wherever they are (the dissectors only look at known ports).
const plaintextHTTP = `(http.request || http.response || http2.header || frame contains "HTTP/1." || frame contains "PRI * HTTP/2.0")`

// checkNoPlaintext stops the capture and requires the traffic between the
// captured pod (web) and its meshed peers (loadgen, books) to be TCP,
// TLS with handshakes, and never plaintext HTTP.
func (cp *capture) checkNoPlaintext(t *testing.T, c *cluster, ns string) {
	t.Helper()
	if cp.tshark == "" {
		t.Log("packet capture check skipped: no tshark")
		return
	}
	file := cp.stop(t)
	ips := map[string]string{}
	for _, p := range c.pods(t, ns, "") {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			ips[p.Labels["app"]] = p.Status.PodIP
		}
	}
	w := cp.pod.Status.PodIP
	var pairs []string
	for _, peer := range []string{"loadgen", "books"} {
		if ips[peer] == "" {
			t.Fatalf("no pod IP for %s", peer)
		}
		pairs = append(pairs, fmt.Sprintf("(ip.addr==%s && ip.addr==%s)", w, ips[peer]))
	}
	meshed := "tcp && (" + strings.Join(pairs, " || ") + ")"
	// The mesh hop goes to the server's target port; have tshark read it
	// as TLS for the TLS counts (the plaintext count uses the defaults).
	asTLS := []string{"-d", "tcp.port==8080,tls", "-d", "tcp.port==4143,tls"}
	all := cp.count(t, file, "tcp")
	tcp := cp.count(t, file, meshed)
	withPayload := cp.count(t, file, meshed+" && tcp.len > 0")
	plain := cp.count(t, file, meshed+" && "+plaintextHTTP)
	plainAs := cp.count(t, file, meshed+" && "+plaintextHTTP, asTLS...)
	hello := cp.count(t, file, meshed+" && tls.handshake.type == 1", asTLS...)
	handshakes := cp.count(t, file, meshed+" && tls.handshake", asTLS...)
	// TLS 1.3 hides the real record type: the outer one is opaque_type.
	appData := cp.count(t, file, meshed+" && (tls.record.opaque_type == 23 || tls.record.content_type == 23)", asTLS...)
	sni := map[string]bool{}
	for _, s := range cp.fields(t, file, meshed+" && tls.handshake.type == 1", "tls.handshake.extensions_server_name", asTLS...) {
		sni[s] = true
	}
	t.Logf("tshark on %s (%s), web %s <-> loadgen %s / books %s: %d TCP packets captured, %d between meshed pods (%d with payload); "+
		"plaintext HTTP frames: %d (default dissectors), %d (as TLS); TLS ClientHellos: %d, handshake frames: %d, application-data frames: %d; SNI: %v",
		cp.iface, cp.pod.Name, w, ips["loadgen"], ips["books"], all, tcp, withPayload, plain, plainAs, hello, handshakes, appData, keys(sni))
	if tcp == 0 || withPayload == 0 {
		t.Errorf("the capture holds no TCP between the meshed pods: it proves nothing")
	}
	if plain != 0 || plainAs != 0 {
		t.Errorf("%d frames of plaintext HTTP between meshed pods", max(plain, plainAs))
	}
	if hello == 0 || handshakes == 0 || appData == 0 {
		t.Errorf("the traffic between meshed pods is not TLS: %d ClientHellos, %d handshake frames, %d application-data frames", hello, handshakes, appData)
	}
	for s := range sni {
		if !strings.HasSuffix(s, ".serviceaccount.identity.cluster.local") {
			t.Errorf("ClientHello with SNI %q, want a workload identity's DNS form", s)
		}
	}
}

// plainClient is a load generator in a namespace without injection,
// calling the meshed web Service: its requests reach web's proxy in the
// clear.
var plainClient = template.Must(template.New("plain").Parse(`
apiVersion: v1
kind: Namespace
metadata: {name: {{.NS}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: plain, namespace: {{.NS}}}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: plain}}
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=loadgen, --proxy=, --target={{.Target}}, --path=/books/, --rps=5, --duration=8s]
`[1:]))

// checkControl captures again on the same veth while an unmeshed client
// calls web, and requires tshark to see its plaintext HTTP: the method
// that found none between meshed pods does find it when it is there.
func (cp *capture) checkControl(t *testing.T, c *cluster, ns string) {
	t.Helper()
	if cp.tshark == "" {
		t.Log("packet capture control skipped: no tshark")
		return
	}
	plainNS := ns + "-plain"
	c.namespace(t, plainNS)
	cp.start(t)
	c.mustRun(t, render(t, plainClient, map[string]string{
		"NS": plainNS, "Image": c.image("demo-app"), "Target": "web." + ns + ".svc.cluster.local:80",
	}), "apply", "--server-side", "-f", "-")
	res := c.jobLoadResult(t, plainNS, "plain", 2*time.Minute)
	file := cp.stop(t)
	w := cp.pod.Status.PodIP
	// To the app's port: the kubelet's probes of the proxy's admin port
	// (4191, from the bridge address) are plaintext too, but not the control.
	toApp := fmt.Sprintf("ip.dst==%s && tcp.dstport==8080 && http.request", w)
	reqs := cp.fields(t, file, toApp, "ip.src")
	clients := map[string]bool{}
	for _, ip := range reqs {
		clients[ip] = true
	}
	uris := cp.fields(t, file, toApp, "http.request.uri")
	sample := ""
	if len(uris) > 0 {
		sample = "GET " + uris[0]
	}
	t.Logf("control: unmeshed client sent %d requests (%d ok, %d failed); tshark on %s saw %d plaintext HTTP requests to web from %v, e.g. %q",
		res.Sent, res.OK, res.Failed, cp.iface, len(reqs), keys(clients), sample)
	if len(reqs) == 0 {
		t.Errorf("tshark saw no plaintext HTTP request from the unmeshed client: the capture method cannot tell plaintext apart")
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// hostVeth finds the host-side interface of the pod whose IP is ip: the
// pod's network namespace (under /var/run/netns, where the CNI plugins
// put them) has it as eth0, whose peer index (eth0@ifN) is the host
// interface's index.
func hostVeth(ctx context.Context, ip string) (string, error) {
	ents, err := os.ReadDir("/var/run/netns")
	if err != nil {
		return "", fmt.Errorf("listing network namespaces: %w", err)
	}
	peer := regexp.MustCompile(`^\d+: eth0@if(\d+):`)
	for _, e := range ents {
		out, err := exec.CommandContext(ctx, "ip", "-n", e.Name(), "-o", "-4", "addr", "show", "dev", "eth0").Output()
		if err != nil || !strings.Contains(string(out), " "+ip+"/") {
			continue
		}
		out, err = exec.CommandContext(ctx, "ip", "-n", e.Name(), "-o", "link", "show", "dev", "eth0").Output()
		if err != nil {
			return "", fmt.Errorf("ip -n %s link: %w", e.Name(), err)
		}
		m := peer.FindStringSubmatch(string(out))
		if m == nil {
			return "", fmt.Errorf("netns %s: eth0 is not a veth: %s", e.Name(), out)
		}
		idx, _ := strconv.Atoi(m[1])
		ifc, err := net.InterfaceByIndex(idx)
		if err != nil {
			return "", fmt.Errorf("host interface %d (peer of eth0 in %s): %w", idx, e.Name(), err)
		}
		return ifc.Name, nil
	}
	return "", fmt.Errorf("no network namespace in /var/run/netns has %s on eth0", ip)
}
