package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/test/harness"
	"github.com/trellis-mesh/trellis/viz/localtap"
)

// TestLocalTap: the local controller's tap API (`trellis tap --local`)
// with the real controller, proxies and CLI: events of the tapped
// workload only, with both identities; a wrong token is refused.
func TestLocalTap(t *testing.T) {
	requireBinaries(t)
	a := startApp(t, "echo-1")
	clientTap, serverTap := ports.Addr(t), ports.Addr(t)
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client", TapAddr: clientTap},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", TapAddr: serverTap, Endpoints: []harness.Endpoint{
				{Service: "echo", Port: 80, TargetPort: port(t, a.Addr)},
			}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	token := filepath.Join(m.Dir, "tap.token")
	if err := os.WriteFile(token, []byte(harness.NewToken()+harness.NewToken()), 0o600); err != nil {
		t.Fatal(err)
	}
	tapAPI := ports.Addr(t)
	ctl := harness.StartProcess(t, "controller", m.LogDir, bins.Controller, "local", "--config", m.StorePath, "--state-dir", m.StateDir,
		"--listen", m.ControllerAddr, "--admin-addr", m.ControllerAdminAddr, "--tap-api-addr", tapAPI, "--tap-token-file", token)
	if err := harness.WaitReady(ctl, m.ControllerAdminAddr, harness.ReadyTimeout); err != nil {
		t.Fatalf("%v\n%s", err, ctl.LogTail(30))
	}
	server := m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: a.Addr, Args: []string{"--tap-addr", serverTap}})
	client := m.StartProxy(harness.ProxySpec{Workload: "client", Args: []string{"--tap-addr", clientTap}})
	waitReady(t, server, client)
	if err := localtap.WriteInfo(m.Dir, localtap.Info{Addr: tapAPI, TokenFile: token}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { // traffic until the test ends
		c := meshClient(client.OutboundAddr, 5*time.Second)
		for ctx.Err() == nil {
			if resp, err := c.Get("http://" + echoAuthority + "/tapped"); err == nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	start := time.Now()
	out, err := exec.CommandContext(ctx, bins.CLI, "tap", "--local-dir", m.Dir, "workload/echo-1", "-o", "json", "--limit", "3").Output()
	if err != nil {
		t.Fatalf("trellis tap --local: %v\n%s\n%s", err, out, ctl.LogTail(20))
	}
	t.Logf("3 requests tapped in %s", time.Since(start).Round(time.Millisecond))
	ends := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		ev := &apiv1.TapEvent{}
		if err := protojson.Unmarshal([]byte(line), ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev.GetPod() != "echo-1" || ev.GetNamespace() != ns || ev.GetDirection() != "inbound" || !ev.GetTls() ||
			ev.GetSourceIdentity() != identityOf("client") || ev.GetDestinationIdentity() != identityOf("echo") {
			t.Errorf("event %s", line)
		}
		if r := ev.GetRequestInit(); r != nil && r.GetPath() != "/tapped" {
			t.Errorf("path %q", r.GetPath())
		}
		if ev.GetResponseEnd() != nil {
			ends++
		}
	}
	if ends != 3 {
		t.Errorf("%d requests ended; want --limit 3", ends)
	}

	// Another token: refused before any proxy is tapped.
	bad := filepath.Join(m.Dir, "bad.token")
	if err := os.WriteFile(bad, []byte("not-the-token-of-this-controller"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := localtap.WriteInfo(m.Dir, localtap.Info{Addr: tapAPI, TokenFile: bad}); err != nil {
		t.Fatal(err)
	}
	out, err = exec.CommandContext(ctx, bins.CLI, "tap", "--local-dir", m.Dir, "workload/echo-1", "--limit", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unauthenticated") {
		t.Errorf("a wrong token: %v\n%s", err, out)
	}
}
