package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// TestWrongTokenNeverReady starts a proxy whose token is not the one the
// store holds: it must not get a certificate, so it never becomes ready.
func TestWrongTokenNeverReady(t *testing.T) {
	requireBinaries(t)
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "intruder", Namespace: ns, ServiceAccount: "echo"},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	wrong := harness.NewToken()
	st := m.Store()
	if wrong == st.Workload("intruder").Token {
		t.Fatal("token collision")
	}
	px := m.StartProxy(harness.ProxySpec{Workload: "intruder", Token: wrong})

	// Watch /ready for a bounded time: it must answer, and never 200.
	var answered int
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if px.Process.Exited() {
			// Exiting is also "never ready", but the admin server should
			// keep reporting why; note it and stop watching.
			t.Logf("proxy with a wrong token exited:\n%s", px.Process.LogTail(10))
			break
		}
		code, body, err := harness.HTTPStatus(t.Context(), "http://"+px.AdminAddr+"/ready")
		if err == nil {
			answered++
			if code == http.StatusOK {
				t.Fatalf("proxy with a wrong token is ready: %q", body)
			}
			if code != http.StatusServiceUnavailable {
				t.Errorf("/ready = %d, want 503", code)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if answered == 0 && !px.Process.Exited() {
		t.Fatalf("admin /ready never answered\n%s", px.Process.LogTail(20))
	}
	if !px.Process.Exited() {
		metricAtLeast(t, px, "trellis_identity_certify_total", map[string]string{"result": "error"}, 1, 5*time.Second)
		if ms, err := px.Metrics(context.Background()); err == nil {
			if v := ms.Value("trellis_identity_certify_total", map[string]string{"result": "ok"}); v != 0 {
				t.Errorf("certify ok = %g with a wrong token", v)
			}
		}
	}
	// The controller counts the refusal.
	assertControllerRefusal(t, m.ControllerAdminAddr)
}

// assertControllerRefusal checks the controller counted a Certify refused
// for a bad token.
func assertControllerRefusal(t *testing.T, adminAddr string) {
	t.Helper()
	scrapeAtLeast(t, "controller", adminAddr, "trellis_controller_certificates_refused_total",
		map[string]string{"reason": "bad_token"}, 1, 5*time.Second)
}
