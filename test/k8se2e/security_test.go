package k8se2e

import (
	"strings"
	"testing"
	"text/template"
	"time"
)

// victim is a meshed pod with an app on 0.0.0.0:8080 and a second server
// that listens only on 127.0.0.1:9090; its Service also exposes the
// proxy's outbound (4140) and admin (4191) ports, so that a meshed client
// can ask its proxy for them.
var victim = template.Must(template.New("victim").Parse(`
apiVersion: v1
kind: Namespace
metadata:
  name: {{.NS}}
  annotations: {trellis.io/inject: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: victim, namespace: {{.NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: loadgen, namespace: {{.NS}}}
---
apiVersion: v1
kind: Service
metadata: {name: victim, namespace: {{.NS}}}
spec:
  selector: {app: victim}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: loopback-only, port: 9090, targetPort: 9090}
  - {name: proxy-outbound, port: 4140, targetPort: 4140}
  - {name: proxy-admin, port: 4191, targetPort: 4191}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: victim, namespace: {{.NS}}}
spec:
  replicas: 1
  selector: {matchLabels: {app: victim}}
  template:
    metadata: {labels: {app: victim}}
    spec:
      serviceAccountName: victim
      containers:
      - name: app
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --name=victim, --listen=0.0.0.0:8080, --proxy=]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 2
      - name: secret
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --name=secret, --listen=127.0.0.1:9090, --proxy=]
`[1:]))

// TestSecurity is the suite "security" (issue 9, finding 1, on Kubernetes):
// a meshed client asks a meshed pod's proxy, through the mesh, for its
// outbound port, its admin port and an app port that listens only on
// 127.0.0.1: none answers; the app on the pod IP is still served; the
// victim's proxy counts and logs the refusals with the client's identity
// and never restarts.
func TestSecurity(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-security"
	c.sharedInstall(t)
	c.namespace(t, ns)
	c.waitInjector(t)
	c.mustRun(t, render(t, victim, map[string]string{"NS": ns, "Image": c.image("demo-app")}), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "victim")
	pods := c.pods(t, ns, "app=victim")
	if len(pods) != 1 {
		t.Fatalf("victim pods: %d, want 1", len(pods))
	}
	pod := pods[0]
	if err := meshed(pod, c.tag); err != nil {
		t.Fatal(err)
	}
	client := "spiffe://cluster.local/ns/" + ns + "/sa/loadgen"

	cases := []struct {
		job, port string
		wantOK    bool
	}{
		{"to-app", "80", true},
		{"to-loopback-only", "9090", false},
		{"to-proxy-outbound", "4140", false},
		{"to-proxy-admin", "4191", false},
	}
	for _, tc := range cases {
		c.startLoad(t, loadParams{NS: ns, Name: tc.job, Target: "victim." + ns + ".svc.cluster.local:" + tc.port,
			Path: "/echo", RPS: 5, Duration: 4 * time.Second})
	}
	for _, tc := range cases {
		res := c.jobLoadResult(t, ns, tc.job, 3*time.Minute)
		t.Logf("%s (port %s): %+v", tc.job, tc.port, res)
		switch {
		case tc.wantOK && (res.OK == 0 || res.Failed != 0):
			t.Errorf("%s: %d ok, %d failed; the app must be served", tc.job, res.OK, res.Failed)
		case !tc.wantOK && (res.OK != 0 || res.Failed == 0):
			t.Errorf("%s: %d ok, %d failed; port %s must not answer through the mesh", tc.job, res.OK, res.Failed, tc.port)
		}
	}

	m, err := c.metrics(t.Context(), ns, pod.Name, 4191)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("victim's refusals and errors:\n%s\n%s", m.Series("trellis_inbound_refused_total"), m.Series("trellis_request_errors_total"))
	// 4140 is one of the proxy's own ports: refused with the caller known.
	if v := m.Value("trellis_inbound_refused_total", map[string]string{"peer_identity": client, "reason": "forbidden_port"}); v < 1 {
		t.Errorf("trellis_inbound_refused_total{peer_identity=%q,reason=forbidden_port} = %g, want >= 1", client, v)
	}
	// 9090 is dialled on the pod IP, where nothing listens: the server
	// proxy cannot reach its app there.
	if v := m.Value("trellis_request_errors_total", map[string]string{"direction": "inbound", "reason": "app_unreachable"}); v < 1 {
		t.Errorf("no inbound app_unreachable for the loopback-only port (dialled on the pod IP)")
	}
	logs := c.mustRun(t, nil, "-n", ns, "logs", pod.Name, "-c", "trellis-proxy")
	if !strings.Contains(logs, "inbound: refused") || !strings.Contains(logs, client) || !strings.Contains(logs, "target port 4140 refused") {
		t.Errorf("the victim's proxy log does not name the refused caller and port:\n%s", lastLines(logs, 20))
	}

	// The proxy never stopped: no restart, still ready.
	pod = c.pods(t, ns, "app=victim")[0]
	if err := meshed(pod, c.tag); err != nil {
		t.Error(err)
	}
	for _, s := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		if s.RestartCount != 0 {
			t.Errorf("container %s restarted %d times", s.Name, s.RestartCount)
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
