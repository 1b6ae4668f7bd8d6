//go:build linux

package netns

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trellis-mesh/trellis/proxy/origdst"
)

// The redirect tests' own addresses and ports (the namespaces are private
// to the test, so fixed values cannot collide with anything).
const (
	rdPodIP4   = "10.214.0.1"
	rdPeerIP4  = "10.214.0.2"
	rdPodIP6   = "fd00:214::1"
	rdPeerIP6  = "fd00:214::2"
	rdProxyUID = 2102
	rdAppUID   = 1000 // any uid but the proxy's
	rdOutPort  = 4140
	rdInPort   = 4143
	rdAdmin    = 4191 // skipped inbound
	rdAppPort  = 8080
	rdSkipOut  = 8081 // skipped outbound
)

// rdInitArgs are the flags both ways get (CNI: the config + annotations).
var rdInitArgs = []string{
	"--proxy-uid", "2102", "--inbound-port", "4143", "--outbound-port", "4140",
	"--skip-inbound-ports", "4143,4191", "--skip-outbound-ports", "8081", "--ipv6", "true",
}

// buildRedirectBinaries builds trellis-init and trellis-cni for one test.
func buildRedirectBinaries(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TRELLIS_BIN_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "trellis-cni")); err == nil {
			return d
		}
	}
	// World-readable: one check runs as an unprivileged uid.
	dir, err := os.MkdirTemp("", "trellis-redirect-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "build", "-o", dir+string(os.PathSeparator),
		"github.com/trellis-mesh/trellis/cmd/trellis-init",
		"github.com/trellis-mesh/trellis/cmd/trellis-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// rdPod is a "pod" namespace joined to a "peer" namespace (the rest of the
// cluster) by a veth pair, dual-stack, with a default route via the peer.
type rdPod struct {
	pod, peer *Netns
}

func newRdPod(t *testing.T, prefix string) *rdPod {
	t.Helper()
	p := &rdPod{pod: newNetns(t, uniq(prefix+"p")), peer: newNetns(t, uniq(prefix+"q"))}
	vp, vq := uniq(prefix+"v"), uniq(prefix+"w")
	// Both ends are created inside the namespaces, so deleting them removes
	// everything.
	p.pod.Run(t, "ip", "link", "add", vp, "type", "veth", "peer", "name", vq, "netns", p.peer.Name)
	p.pod.Run(t, "ip", "addr", "add", rdPodIP4+"/24", "dev", vp)
	p.pod.Run(t, "ip", "-6", "addr", "add", rdPodIP6+"/64", "dev", vp, "nodad")
	p.pod.Run(t, "ip", "link", "set", vp, "up")
	p.peer.Run(t, "ip", "addr", "add", rdPeerIP4+"/24", "dev", vq)
	p.peer.Run(t, "ip", "-6", "addr", "add", rdPeerIP6+"/64", "dev", vq, "nodad")
	p.peer.Run(t, "ip", "link", "set", vq, "up")
	// The probe of `trellis-init --check` dials documentation addresses,
	// which need a route, as in any real pod.
	p.pod.Run(t, "ip", "route", "add", "default", "via", rdPeerIP4)
	p.pod.Run(t, "ip", "-6", "route", "add", "default", "via", rdPeerIP6)
	return p
}

// serveBanner answers each connection with "<name> <original dst>\n" (or
// "<name> -" when the connection was not redirected), so a client can tell
// who accepted it and what it had dialed.
func serveBanner(t *testing.T, ns *Netns, name, addr string) {
	t.Helper()
	ln := ns.Listen(t, addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Conntrack knows every connection, so SO_ORIGINAL_DST only
			// means "redirected" when it differs from where it landed.
			od := "-"
			if ap, err := origdst.Get(c); err == nil && ap.String() != c.LocalAddr().String() {
				od = ap.String()
			}
			fmt.Fprintf(c, "%s %s\n", name, od)
			c.Close()
		}
	}()
}

// dialAs connects from inside ns with the given fsuid (the uid netfilter's
// owner match sees for the socket; -1 keeps root) and returns the banner.
func dialAs(ns *Netns, uid int, addr string) (string, error) {
	var c net.Conn
	err := ns.Do(func() error {
		// Only this thread's fsuid changes, and Do throws the thread away.
		if uid >= 0 {
			if err := unix.Setfsuid(uid); err != nil {
				return fmt.Errorf("setfsuid: %w", err)
			}
		}
		var err error
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

type rdCase struct {
	name string
	from string // "pod" or "peer"
	uid  int
	addr string
	want string
}

// rdRedirectedCases are what a pod with the rules must see.
func rdRedirectedCases() []rdCase {
	hp := func(h string, p int) string { return net.JoinHostPort(h, fmt.Sprint(p)) }
	return []rdCase{
		{"outbound v4 is redirected", "pod", rdAppUID, hp(rdPeerIP4, rdAppPort), "outbound " + hp(rdPeerIP4, rdAppPort)},
		{"outbound v6 is redirected", "pod", rdAppUID, hp(rdPeerIP6, rdAppPort), "outbound " + hp(rdPeerIP6, rdAppPort)},
		{"root's outbound is redirected too", "pod", -1, hp(rdPeerIP4, rdAppPort), "outbound " + hp(rdPeerIP4, rdAppPort)},
		{"proxy uid v4 goes out", "pod", rdProxyUID, hp(rdPeerIP4, rdAppPort), "peer -"},
		{"proxy uid v6 goes out", "pod", rdProxyUID, hp(rdPeerIP6, rdAppPort), "peer -"},
		{"skipped outbound port goes out", "pod", rdAppUID, hp(rdPeerIP4, rdSkipOut), "peer -"},
		{"loopback v4 is not redirected", "pod", rdAppUID, hp("127.0.0.1", rdAppPort), "app -"},
		{"loopback v6 is not redirected", "pod", rdAppUID, hp("::1", rdAppPort), "app -"},
		{"own pod IP (via lo) is not redirected", "pod", rdAppUID, hp(rdPodIP4, rdAppPort), "app -"},
		// The inbound proxy dials the app on the pod IP (--app-ip): its
		// own connection must reach the app, not loop back into it.
		{"proxy uid to own pod IP v4 reaches the app", "pod", rdProxyUID, hp(rdPodIP4, rdAppPort), "app -"},
		{"proxy uid to own pod IP v6 reaches the app", "pod", rdProxyUID, hp(rdPodIP6, rdAppPort), "app -"},
		{"inbound v4 is redirected", "peer", -1, hp(rdPodIP4, rdAppPort), "inbound " + hp(rdPodIP4, rdAppPort)},
		{"inbound v6 is redirected", "peer", -1, hp(rdPodIP6, rdAppPort), "inbound " + hp(rdPodIP6, rdAppPort)},
		{"skipped inbound port reaches the app", "peer", -1, hp(rdPodIP4, rdAdmin), "admin -"},
		{"inbound to the proxy's port is not looped", "peer", -1, hp(rdPodIP4, rdInPort), "inbound -"},
	}
}

// startRdServers starts the proxy stand-ins and the app in the pod and a
// server in the peer.
func startRdServers(t *testing.T, p *rdPod) {
	t.Helper()
	serveBanner(t, p.pod, "outbound", fmt.Sprintf("127.0.0.1:%d", rdOutPort))
	serveBanner(t, p.pod, "outbound", fmt.Sprintf("[::1]:%d", rdOutPort))
	serveBanner(t, p.pod, "inbound", fmt.Sprintf(":%d", rdInPort))
	serveBanner(t, p.pod, "admin", fmt.Sprintf(":%d", rdAdmin))
	serveBanner(t, p.pod, "app", fmt.Sprintf(":%d", rdAppPort))
	serveBanner(t, p.peer, "peer", fmt.Sprintf(":%d", rdAppPort))
	serveBanner(t, p.peer, "peer", fmt.Sprintf(":%d", rdSkipOut))
}

func runRdCases(t *testing.T, p *rdPod, cases []rdCase) {
	t.Helper()
	for _, c := range cases {
		ns := p.pod
		if c.from == "peer" {
			ns = p.peer
		}
		got, err := dialAs(ns, c.uid, c.addr)
		if err != nil {
			t.Errorf("%s: dial %s as uid %d from %s: %v", c.name, c.addr, c.uid, c.from, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: dial %s as uid %d from %s: got %q, want %q", c.name, c.addr, c.uid, c.from, got, c.want)
		}
	}
}

// natRules lists a namespace's nat table (both families) as rules.
func natRules(t *testing.T, ns *Netns) []string {
	t.Helper()
	var all []string
	for _, bin := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command("ip", "netns", "exec", ns.Name, bin, "-w", "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -S in %s: %v\n%s", bin, ns.Name, err, out)
		}
		for l := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
			all = append(all, bin+": "+l)
		}
	}
	return all
}

func trellisRules(rules []string) []string {
	var out []string
	for _, r := range rules {
		if strings.Contains(r, "TRELLIS_") {
			out = append(out, r)
		}
	}
	return out
}

// runInit runs trellis-init in the namespace and returns its output.
func runInit(ns *Netns, bin string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...).CombinedOutput()
	return string(out), err
}

func TestTrellisInitRedirect(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-restore", "ip6tables", "ip6tables-restore")
	bins := buildRedirectBinaries(t)
	initBin := filepath.Join(bins, "trellis-init")
	p := newRdPod(t, "tri")

	// Something else's rules in the pod, which trellis-init must leave be.
	p.pod.Run(t, "iptables", "-w", "-t", "nat", "-N", "OTHER")
	p.pod.Run(t, "iptables", "-w", "-t", "nat", "-A", "OTHER", "-p", "udp", "-j", "RETURN")
	p.pod.Run(t, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "5353", "-j", "OTHER")
	foreign := natRules(t, p.pod)

	// Before: both checks fail.
	for _, m := range []string{"rules", "probe"} {
		out, err := runInit(p.pod, initBin, append([]string{"--check", "--check-method", m, "--probe-timeout", "1s"}, rdInitArgs...)...)
		if err == nil {
			t.Fatalf("--check --check-method %s passed before any rules:\n%s", m, out)
		}
		if !strings.Contains(out, "not in place") {
			t.Errorf("--check --check-method %s: want a 'not in place' message, got:\n%s", m, out)
		}
	}

	// Apply twice: the second run must leave exactly the same table.
	out, err := runInit(p.pod, initBin, rdInitArgs...)
	if err != nil {
		t.Fatalf("trellis-init: %v\n%s", err, out)
	}
	t.Logf("trellis-init:\n%s", out)
	first := natRules(t, p.pod)
	out, err = runInit(p.pod, initBin, rdInitArgs...)
	if err != nil {
		t.Fatalf("trellis-init (second run): %v\n%s", err, out)
	}
	if second := natRules(t, p.pod); !slices.Equal(first, second) {
		t.Fatalf("second run changed the nat table:\n%s\nthen:\n%s", strings.Join(first, "\n"), strings.Join(second, "\n"))
	}
	for _, jump := range []string{"-A OUTPUT -p tcp -j TRELLIS_OUTPUT", "-A PREROUTING -p tcp -j TRELLIS_PREROUTING"} {
		for _, fam := range []string{"iptables: ", "ip6tables: "} {
			if n := slices.Index(first, fam+jump); n < 0 || slices.Index(first[n+1:], fam+jump) >= 0 {
				t.Errorf("want exactly one %q in:\n%s", fam+jump, strings.Join(first, "\n"))
			}
		}
	}
	for _, r := range foreign {
		if !slices.Contains(first, r) {
			t.Errorf("foreign rule %q is gone after trellis-init", r)
		}
	}

	// After: both checks pass (the probe needs the outbound port free, so
	// it runs before the stand-in proxy starts).
	for _, m := range []string{"rules", "probe"} {
		if out, err := runInit(p.pod, initBin, append([]string{"--check", "--check-method", m}, rdInitArgs...)...); err != nil {
			t.Fatalf("--check --check-method %s after applying: %v\n%s", m, err, out)
		}
	}
	// A check with other settings than the rules' fails.
	if out, err := runInit(p.pod, initBin, "--check", "--check-method", "rules", "--outbound-port", "5000"); err == nil {
		t.Errorf("--check with another outbound port passed:\n%s", out)
	}

	startRdServers(t, p)
	runRdCases(t, p, rdRedirectedCases())

	// A tampered rule set fails the check, and a rerun repairs it.
	p.pod.Run(t, "iptables", "-w", "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "TRELLIS_OUTPUT")
	if out, err := runInit(p.pod, initBin, append([]string{"--check", "--check-method", "rules"}, rdInitArgs...)...); err == nil {
		t.Errorf("--check passed with the OUTPUT jump deleted:\n%s", out)
	}
	if out, err := runInit(p.pod, initBin, rdInitArgs...); err != nil {
		t.Fatalf("trellis-init repair run: %v\n%s", err, out)
	}
	if repaired := natRules(t, p.pod); !slices.Equal(trellisRules(first), trellisRules(repaired)) {
		t.Errorf("repair run gave:\n%s\nwant:\n%s", strings.Join(repaired, "\n"), strings.Join(first, "\n"))
	}
}

func TestTrellisInitDryRunAndBadFlags(t *testing.T) {
	requirePrivileges(t)
	bins := buildRedirectBinaries(t)
	initBin := filepath.Join(bins, "trellis-init")
	out, err := exec.Command(initBin, append([]string{"--dry-run"}, rdInitArgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("--dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"*nat", "-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -j RETURN",
		"-A TRELLIS_OUTPUT -d ::1/128 -j RETURN", "-A TRELLIS_OUTPUT -p tcp -m tcp --dport 8081 -j RETURN", "COMMIT"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{
		{"--skip-outbound-ports", "http"},
		{"--inbound-port", "4140"},
		{"--proxy-uid", "0"},
		{"--ipv6", "maybe"},
	} {
		cmd := exec.Command(initBin, args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.HasPrefix(string(out), "trellis-init: ") {
			t.Errorf("trellis-init %v: exit %v, output %q; want exit 2 and a trellis-init: message", args, err, out)
		}
	}
}

// cniConf is a network configuration as a runtime passes it to a chained
// plugin: the list's name and version, our entry, the pod's annotations
// (runtimeConfig) and the interface plugin's result.
func cniConf(annotations map[string]string) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "trellis-cni",
		"capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true},
		"proxyUID":     rdProxyUID, "inboundPort": rdInPort, "outboundPort": rdOutPort,
		"skipInboundPorts": "4143,4191", "ipv6": "true",
		"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": annotations},
		"prevResult":    json.RawMessage(rdPrevResult),
	}
	b, err := json.Marshal(conf)
	if err != nil {
		panic(err)
	}
	return b
}

const rdPrevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"aa:bb:cc:dd:ee:ff","sandbox":"/var/run/netns/x"}],` +
	`"ips":[{"interface":0,"address":"10.214.0.1/24","gateway":"10.214.0.2"}],"routes":[{"dst":"0.0.0.0/0"}]}`

type cniRun struct {
	stdout, stderr string
	err            error
}

func runCNI(bin, command, netns, podNS, podName string, conf []byte) cniRun {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID=4f6c0ffee",
		"CNI_NETNS="+netns,
		"CNI_IFNAME=eth0",
		"CNI_PATH=/opt/cni/bin",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE="+podNS+";K8S_POD_NAME="+podName+";K8S_POD_INFRA_CONTAINER_ID=4f6c0ffee",
	)
	cmd.Stdin = bytes.NewReader(conf)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	return cniRun{so.String(), se.String(), err}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("not JSON: %v: %q", err, a)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("not JSON: %v: %q", err, b)
	}
	return reflect.DeepEqual(x, y)
}

func TestTrellisCNI(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-restore", "ip6tables", "ip6tables-restore")
	bins := buildRedirectBinaries(t)
	cniBin := filepath.Join(bins, "trellis-cni")
	p := newRdPod(t, "trc")
	netnsPath := filepath.Join("/var/run/netns", p.pod.Name)
	meshed := map[string]string{
		"trellis.io/proxy-version":              "dev",
		"config.trellis.io/skip-outbound-ports": "8081",
	}

	// Not meshed, or in an excluded namespace: result passed through, no rules.
	for _, tc := range []struct {
		name, ns string
		ann      map[string]string
	}{
		{"not injected", "demo", map[string]string{"trellis.io/inject": "enabled"}},
		{"kube-system", "kube-system", meshed},
		{"trellis-system", "trellis-system", meshed},
	} {
		r := runCNI(cniBin, "ADD", netnsPath, tc.ns, "x", cniConf(tc.ann))
		if r.err != nil {
			t.Fatalf("%s: ADD: %v\nstdout %s\nstderr %s", tc.name, r.err, r.stdout, r.stderr)
		}
		if !jsonEqual(t, r.stdout, rdPrevResult) {
			t.Errorf("%s: ADD printed %s, want prevResult %s", tc.name, r.stdout, rdPrevResult)
		}
		if got := trellisRules(natRules(t, p.pod)); len(got) != 0 {
			t.Fatalf("%s: ADD programmed rules: %v", tc.name, got)
		}
	}

	// CHECK before the rules exist fails with a CNI error.
	r := runCNI(cniBin, "CHECK", netnsPath, "demo", "web-1", cniConf(meshed))
	var cniErr struct {
		Code    int    `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if r.err == nil {
		t.Fatalf("CHECK passed before ADD: %s", r.stdout)
	}
	if err := json.Unmarshal([]byte(r.stdout), &cniErr); err != nil || cniErr.Code != 101 || !strings.Contains(cniErr.Msg, "missing") {
		t.Fatalf("CHECK before ADD printed %q (%v), want CNI error JSON with code 101", r.stdout, err)
	}

	// ADD for a meshed pod, twice.
	for i := range 2 {
		r = runCNI(cniBin, "ADD", netnsPath, "demo", "web-1", cniConf(meshed))
		if r.err != nil {
			t.Fatalf("ADD #%d: %v\nstdout %s\nstderr %s", i+1, r.err, r.stdout, r.stderr)
		}
		if !jsonEqual(t, r.stdout, rdPrevResult) {
			t.Errorf("ADD #%d printed %s, want prevResult %s", i+1, r.stdout, rdPrevResult)
		}
	}
	cniRules := trellisRules(natRules(t, p.pod))

	// The same rules as trellis-init with the same settings, in a fresh netns.
	ref := newNetns(t, uniq("trcr"))
	if out, err := runInit(ref, filepath.Join(bins, "trellis-init"), rdInitArgs...); err != nil {
		t.Fatalf("trellis-init in the reference netns: %v\n%s", err, out)
	}
	if initRules := trellisRules(natRules(t, ref)); !slices.Equal(cniRules, initRules) {
		t.Fatalf("trellis-cni rules:\n%s\ntrellis-init rules:\n%s", strings.Join(cniRules, "\n"), strings.Join(initRules, "\n"))
	}

	// The pod's check container passes with no capability and a non-root
	// uid, as in CNI mode: it cannot list the rules, so it probes.
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Log("setpriv not found: running the CNI-mode check as root")
		if out, err := runInit(p.pod, filepath.Join(bins, "trellis-init"), append([]string{"--check", "--check-method", "probe"}, rdInitArgs...)...); err != nil {
			t.Fatalf("trellis-init --check (probe) in the CNI pod: %v\n%s", err, out)
		}
	} else {
		out, err := runInit(p.pod, "setpriv", append([]string{"--reuid", fmt.Sprint(rdAppUID), "--regid", fmt.Sprint(rdAppUID),
			"--clear-groups", "--inh-caps=-all", "--bounding-set=-all", filepath.Join(bins, "trellis-init"), "--check"}, rdInitArgs...)...)
		if err != nil {
			t.Fatalf("unprivileged trellis-init --check in the CNI pod: %v\n%s", err, out)
		}
		if !strings.Contains(out, "proven by probe") {
			t.Fatalf("unprivileged trellis-init --check did not probe:\n%s", out)
		}
		t.Logf("unprivileged check:\n%s", out)
	}
	r = runCNI(cniBin, "CHECK", netnsPath, "demo", "web-1", cniConf(meshed))
	if r.err != nil {
		t.Fatalf("CHECK after ADD: %v\nstdout %s\nstderr %s", r.err, r.stdout, r.stderr)
	}
	startRdServers(t, p)
	runRdCases(t, p, rdRedirectedCases())

	// CHECK notices a tampered chain.
	p.pod.Run(t, "iptables", "-w", "-t", "nat", "-F", "TRELLIS_OUTPUT")
	r = runCNI(cniBin, "CHECK", netnsPath, "demo", "web-1", cniConf(meshed))
	if r.err == nil || !strings.Contains(r.stdout, "TRELLIS_OUTPUT") {
		t.Errorf("CHECK after flushing TRELLIS_OUTPUT: err %v, stdout %s; want a CNI error naming the chain", r.err, r.stdout)
	}

	// DEL succeeds, repeatedly, and when the netns is already gone.
	for _, ns := range []string{netnsPath, netnsPath, "/var/run/netns/does-not-exist"} {
		if r := runCNI(cniBin, "DEL", ns, "demo", "web-1", cniConf(meshed)); r.err != nil {
			t.Errorf("DEL %s: %v\nstdout %s", ns, r.err, r.stdout)
		}
	}

	// No prevResult: a clear error, not a pod without networking.
	var noPrev map[string]any
	_ = json.Unmarshal(cniConf(meshed), &noPrev)
	delete(noPrev, "prevResult")
	b, _ := json.Marshal(noPrev)
	r = runCNI(cniBin, "ADD", netnsPath, "demo", "web-1", b)
	if r.err == nil || !strings.Contains(r.stdout, "chained") {
		t.Errorf("ADD without prevResult: err %v, stdout %s; want a CNI error about chaining", r.err, r.stdout)
	}
}
