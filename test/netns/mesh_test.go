//go:build linux

package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Addresses inside the test's own namespaces: they are never visible
// outside them, so fixed values do not collide between runs.
const (
	ipA          = "10.213.0.1"
	ipB          = "10.213.0.2"
	appPort      = 8080 // the server's port in B; the client dials ipB:appPort
	ctrlPort     = 8086
	ctrlAdmin    = "127.0.0.1:9996"
	outboundPort = 4140
	inboundPort  = 4143
	adminPort    = 4191
	proxyUID     = 2102 // the proxies run as this uid; its traffic is not redirected

	clientID = "spiffe://cluster.local/ns/demo/sa/client"
	webID    = "spiffe://cluster.local/ns/demo/sa/web"
)

// transparentMesh is two namespaces joined by a veth pair:
//
//	A: client --(iptables OUTPUT REDIRECT)--> trellis-proxy outbound
//	   ==mTLS==> B: (iptables PREROUTING REDIRECT) trellis-proxy inbound --> server
//
// The controller (local mode, in A) gives B's proxy address as B's
// ip:appPort, so the inbound proxy recovers the app port with
// SO_ORIGINAL_DST. Services secret.demo:9090 and self.demo:4140 are backed
// by B with those target ports: a loopback-only port and B's proxy's own
// outbound port.
type transparentMesh struct {
	nsA, nsB *Netns
	proxyB   *Proc
	seen     chan *http.Request // requests B's app served
	adminURL string
	client   *http.Client // in A, no keep-alive
}

// loopbackOnlyPort is a port B serves on 127.0.0.1 only.
const loopbackOnlyPort = 9090

func newTransparentMesh(ctx context.Context, t *testing.T, proxyBArgs ...string) *transparentMesh {
	requirePrivileges(t, "iptables")
	bins := buildBinaries(t)

	// --- namespaces and the veth pair between them
	nsA := newNetns(t, uniq("tra"))
	nsB := newNetns(t, uniq("trb"))
	vethA, vethB := uniq("tva"), uniq("tvb")
	// Created in A with its peer directly in B: nothing is ever left in the
	// host namespace, and deleting the namespaces removes both ends.
	nsA.Run(t, "ip", "link", "add", vethA, "type", "veth", "peer", "name", vethB, "netns", nsB.Name)
	nsA.Run(t, "ip", "addr", "add", ipA+"/24", "dev", vethA)
	nsA.Run(t, "ip", "link", "set", vethA, "up")
	nsB.Run(t, "ip", "addr", "add", ipB+"/24", "dev", vethB)
	nsB.Run(t, "ip", "link", "set", vethB, "up")

	// --- the application server in B
	seen := make(chan *http.Request, 16)
	srvLn := nsB.Listen(t, fmt.Sprintf("0.0.0.0:%d", appPort))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Clone(context.Background()):
		default:
		}
		fmt.Fprintf(w, "hello from B, you are %s", r.RemoteAddr)
	})}
	go srv.Serve(srvLn)
	t.Cleanup(func() { srv.Close() })

	// --- files: shared ones readable by the proxies' uid
	shared, err := os.MkdirTemp("", "trellis-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(shared, "state") // controller only (root)
	tokenA, tokenB := randomToken(t), randomToken(t)
	storeFile := filepath.Join(shared, "mesh.yaml")
	writeFile(t, storeFile, fmt.Sprintf(`trustDomain: cluster.local
certificateLifetime: 1h
services:
  - name: web
    namespace: demo
    ports:
      - port: %[1]d
        protocol: http
  - name: secret
    namespace: demo
    ports:
      - port: %[7]d
        protocol: http
  - name: self
    namespace: demo
    ports:
      - port: %[8]d
        protocol: http
workloads:
  - name: client
    namespace: demo
    serviceAccount: client
    token: %[2]s
    proxyAddr: %[3]s:%[4]d
  - name: web
    namespace: demo
    serviceAccount: web
    token: %[5]s
    proxyAddr: %[6]s:%[1]d
    endpoints:
      - service: web
        port: %[1]d
      - service: secret
        port: %[7]d
        targetPort: %[7]d
      - service: self
        port: %[8]d
        targetPort: %[8]d
`, appPort, tokenA, ipA, inboundPort, tokenB, ipB, loopbackOnlyPort, outboundPort), 0o600, -1)
	tokenFileA := filepath.Join(shared, "token-a")
	tokenFileB := filepath.Join(shared, "token-b")
	writeFile(t, tokenFileA, tokenA, 0o600, proxyUID)
	writeFile(t, tokenFileB, tokenB, 0o600, proxyUID)

	// --- controller (local mode) in A, reachable from B over the veth
	ctrl := nsA.Start(t, "trellis-controller", nil, filepath.Join(bins, "trellis-controller"), "local",
		"--config", storeFile, "--state-dir", stateDir,
		"--listen", fmt.Sprintf("%s:%d", ipA, ctrlPort), "--admin-addr", ctrlAdmin, "--log-level", "debug")
	waitHTTP(ctx, t, nsA, ctrl, "http://"+ctrlAdmin+"/ready")
	anchorPEM, err := os.ReadFile(filepath.Join(stateDir, "anchor.crt"))
	if err != nil {
		t.Fatalf("controller trust anchor: %v", err)
	}
	anchors := filepath.Join(shared, "anchors.pem")
	writeFile(t, anchors, string(anchorPEM), 0o644, -1)

	// --- iptables: A redirects the client's outgoing TCP to its proxy's
	// outbound port, except the proxy's own traffic (by uid) and loopback.
	for _, args := range [][]string{
		{"-N", "TRELLIS_OUTPUT"},
		{"-A", "TRELLIS_OUTPUT", "-m", "owner", "--uid-owner", strconv.Itoa(proxyUID), "-j", "RETURN"},
		{"-A", "TRELLIS_OUTPUT", "-o", "lo", "-j", "RETURN"},
		{"-A", "TRELLIS_OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(outboundPort)},
		{"-A", "OUTPUT", "-p", "tcp", "-j", "TRELLIS_OUTPUT"},
	} {
		nsA.Run(t, "iptables", append([]string{"-w", "-t", "nat"}, args...)...)
	}
	// B redirects every incoming TCP connection to its proxy's inbound
	// port, except those already addressed to the proxy.
	for _, args := range [][]string{
		{"-N", "TRELLIS_INBOUND"},
		{"-A", "TRELLIS_INBOUND", "-p", "tcp", "--dport", strconv.Itoa(inboundPort), "-j", "RETURN"},
		{"-A", "TRELLIS_INBOUND", "-p", "tcp", "--dport", strconv.Itoa(adminPort), "-j", "RETURN"},
		{"-A", "TRELLIS_INBOUND", "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(inboundPort)},
		{"-A", "PREROUTING", "-p", "tcp", "-j", "TRELLIS_INBOUND"},
	} {
		nsB.Run(t, "iptables", append([]string{"-w", "-t", "nat"}, args...)...)
	}

	// --- the proxies, as proxyUID
	cred := &syscall.Credential{Uid: proxyUID, Gid: proxyUID}
	startProxy := func(ns *Netns, name, id, tokenFile string, extra ...string) *Proc {
		return ns.Start(t, name, cred, filepath.Join(bins, "trellis-proxy"), append([]string{
			"--mode", "transparent",
			"--outbound-addr", fmt.Sprintf("127.0.0.1:%d", outboundPort),
			"--inbound-addr", fmt.Sprintf("0.0.0.0:%d", inboundPort),
			"--admin-addr", fmt.Sprintf("127.0.0.1:%d", adminPort),
			"--controller-addr", fmt.Sprintf("%s:%d", ipA, ctrlPort),
			"--trust-anchors", anchors,
			"--identity", id,
			"--token-file", tokenFile,
			"--workload", name,
			"--detect-timeout", "2s",
			"--log-level", "debug",
		}, extra...)...)
	}
	proxyA := startProxy(nsA, "proxy-a", clientID, tokenFileA)
	proxyB := startProxy(nsB, "proxy-b", webID, tokenFileB, proxyBArgs...)
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	waitHTTP(ctx, t, nsA, proxyA, adminURL+"/ready")
	waitHTTP(ctx, t, nsB, proxyB, adminURL+"/ready")
	return &transparentMesh{nsA: nsA, nsB: nsB, proxyB: proxyB, seen: seen, adminURL: adminURL,
		client: &http.Client{Transport: &http.Transport{DialContext: nsA.DialContext, DisableKeepAlives: true}}}
}

// TestTransparentMesh runs the whole transparent-mode path of
// newTransparentMesh: the client dials the server's real address and knows
// nothing of the mesh.
func TestTransparentMesh(t *testing.T) {
	// Bounds everything after the build; each phase has its own budget.
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	tm := newTransparentMesh(ctx, t)
	nsA, nsB, seen, adminURL, client := tm.nsA, tm.nsB, tm.seen, tm.adminURL, tm.client
	var err error

	// --- the client in A calls B's real address; it has no idea of the mesh
	target := fmt.Sprintf("http://%s:%d/hello", ipB, appPort)
	var body string
	reqCtx, reqCancel := context.WithTimeout(ctx, 15*time.Second)
	defer reqCancel()
	for attempt := 0; ; attempt++ {
		body, err = get(reqCtx, client, target)
		if err == nil {
			break
		}
		// Discovery may still be warming up; anything else keeps failing
		// until the deadline and is reported then.
		select {
		case <-reqCtx.Done():
			t.Fatalf("GET %s through the mesh: %v (after %d attempts)", target, err, attempt+1)
		case <-time.After(200 * time.Millisecond):
		}
	}

	// The server saw the request coming from B's proxy on loopback, with
	// the mesh headers removed.
	var req *http.Request
	select {
	case req = <-seen:
	default:
		t.Fatal("the server never saw the request")
	}
	if req.URL.Path != "/hello" {
		t.Errorf("server saw path %q, want /hello", req.URL.Path)
	}
	if host, _, _ := net.SplitHostPort(req.RemoteAddr); host != "127.0.0.1" {
		t.Errorf("server saw the request from %s, want 127.0.0.1 (B's inbound proxy): the request bypassed the mesh", req.RemoteAddr)
	}
	for name := range req.Header {
		if strings.HasPrefix(strings.ToLower(name), "trellis-") {
			t.Errorf("mesh header %s reached the application", name)
		}
	}
	if !strings.HasPrefix(body, "hello from B") {
		t.Errorf("client got body %q", body)
	}

	// B's inbound proxy proved the client's identity over mTLS.
	famB := scrape(ctx, t, nsB, adminURL+"/metrics")
	if n := sumCounter(famB, "trellis_requests_total", map[string]string{
		"direction": "inbound", "peer_identity": clientID, "tls": "true",
	}); n < 1 {
		t.Errorf("B: trellis_requests_total{direction=inbound,peer_identity=%q,tls=true} = %v, want >= 1\n%s",
			clientID, n, dump(famB, "trellis_requests_total"))
	}
	t.Logf("B's inbound metrics:\n%s", dump(famB, "trellis_requests_total"))
	// B has no --app-ports: it learned the app port from the connection's
	// original destination and watches that port's policy (one stream).
	if n := sumCounter(famB, "trellis_control_plane_watches", map[string]string{"service": "policy"}); n != 1 {
		t.Errorf("B: trellis_control_plane_watches{service=policy} = %v, want 1 (port %d)\n%s",
			n, appPort, dump(famB, "trellis_control_plane_watches"))
	}
	// A's outbound proxy got the request from the redirect (so origdst
	// worked) and sent it over mTLS to B's identity.
	famA := scrape(ctx, t, nsA, adminURL+"/metrics")
	if n := sumCounter(famA, "trellis_requests_total", map[string]string{
		"direction": "outbound", "peer_identity": webID, "tls": "true",
	}); n < 1 {
		t.Errorf("A: trellis_requests_total{direction=outbound,peer_identity=%q,tls=true} = %v, want >= 1\n%s",
			webID, n, dump(famA, "trellis_requests_total"))
	}
	if n := sumCounter(famA, "trellis_protocol_detect_total", map[string]string{
		"direction": "outbound", "protocol": "http1",
	}); n < 1 {
		t.Errorf("A: no outbound http1 detection counted\n%s", dump(famA, "trellis_protocol_detect_total"))
	}
}

func randomToken(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeFile writes a file and, with uid >= 0, gives it to that user.
func writeFile(t *testing.T, path, content string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if uid >= 0 {
		if err := os.Chown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
}

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// waitHTTP polls url from inside ns until it answers 200, failing early if
// the process exits.
func waitHTTP(ctx context.Context, t *testing.T, ns *Netns, p *Proc, url string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	var last error
	for {
		if exited, err := p.Exited(); exited {
			t.Fatalf("%s exited while waiting for %s: %v\n%s", p.Name, url, err, p.Output.String())
		}
		_, err := get(ctx, c, url)
		if err == nil {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %s never became ready: %v", p.Name, url, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func scrape(ctx context.Context, t *testing.T, ns *Netns, url string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	body, err := get(ctx, c, url)
	if err != nil {
		t.Fatalf("scraping %s in %s: %v", url, ns.Name, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

// sumCounter adds the counters of fam whose labels include want.
func sumCounter(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	fam := fams[name]
	if fam == nil {
		return 0
	}
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, v := range want {
			if labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() // gauges too
		}
	}
	return sum
}

func dump(fams map[string]*dto.MetricFamily, name string) string {
	fam := fams[name]
	if fam == nil {
		return name + ": absent"
	}
	var b strings.Builder
	for _, m := range fam.GetMetric() {
		b.WriteString(name + "{")
		for i, l := range m.GetLabel() {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%s=%q", l.GetName(), l.GetValue())
		}
		fmt.Fprintf(&b, "} %v\n", m.GetCounter().GetValue()+m.GetGauge().GetValue())
	}
	return b.String()
}
