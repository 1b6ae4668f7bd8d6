package k8se2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/test/harness"
)

// haPolicy is applied before the kill: it targets a Server that does not
// exist yet, so the leader writes Accepted=False (TargetNotFound) once.
const haPolicy = `
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: ha-all, namespace: %s}
spec:
  targetRef: {kind: Server, name: ha-all}
  unauthenticated: true
`

// haServer is the change left pending by the kill: every demo pod's port
// 8080 (web, books, authors). Its policy lets everyone in, so the load
// keeps flowing whatever the proxies enforce.
const haServer = `
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: ha-all, namespace: %s}
spec:
  podSelector: {}
  port: 8080
`

// TestHALeader is the suite "ha-leader": with --ha, the replica writing
// status (the Lease holder) is SIGKILLed under load and its pod deleted (a
// lost node), and a Server is applied while no replica leads. The change
// reaches every proxy selected (served by the surviving replicas), another
// replica takes the Lease and writes each changed status condition exactly
// once (the API server's count of status updates, the controllers'
// status-write counters, a stable resourceVersion), and the load sees zero
// failed requests.
func TestHALeader(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-haleader"
	c.install(t, "--ha")
	c.deployDemo(t, ns, 2)
	load := 100 * time.Second
	c.startLoad(t, loadParams{NS: ns, Name: "client", Target: "web." + ns + ".svc.cluster.local:80", RPS: 20, Duration: load})
	started := time.Now()

	c.mustRun(t, []byte(fmt.Sprintf(haPolicy, ns)), "apply", "--server-side", "-f", "-")
	eventually(t, time.Minute, "the AuthorizationPolicy's TargetNotFound status", func() error {
		_, err := c.accepted(t, ns, "authorizationpolicies", "ha-all", metav1.ConditionFalse, "TargetNotFound")
		return err
	})
	writes0 := c.statusPuts(t)
	leader := c.statusLeader(t)
	// SIGKILL (no Lease release), then the pod is gone as with a lost
	// node: another replica must wait out the Lease and take over.
	c.killContainer(t, "trellis-system", leader, "controller")
	killed := time.Now()
	c.mustRun(t, nil, "-n", "trellis-system", "delete", "pod", leader, "--grace-period=0", "--force")
	c.mustRun(t, []byte(fmt.Sprintf(haServer, ns)), "apply", "--server-side", "-f", "-")
	t.Logf("killed the leader %s; Server applied %s later", leader, time.Since(killed).Round(time.Millisecond))

	// Every meshed pod of the namespace with port 8080 logs the Server's
	// answer as the one installed for that port.
	for _, app := range []string{"web", "books", "authors"} {
		for _, p := range c.pods(t, ns, "app="+app) {
			eventually(t, 2*time.Minute, "proxy of "+p.Name+" gets server/ha-all", func() error {
				logs, err := c.run(t.Context(), nil, "-n", ns, "logs", p.Name, "-c", "trellis-proxy")
				if err != nil {
					return err
				}
				for _, l := range strings.Split(logs, "\n") {
					if strings.Contains(l, "control-plane answer") && strings.Contains(l, "port=8080") &&
						(strings.Contains(l, "policy=server/ha-all") || strings.Contains(l, `policy="server/ha-all"`)) {
						return nil
					}
				}
				return fmt.Errorf("no answer server/ha-all for port 8080 in its log")
			})
		}
	}
	t.Logf("every proxy has the Server's answer %s after the kill", time.Since(killed).Round(time.Second))

	var rv [2]string
	eventually(t, 2*time.Minute, "the next leader writes both conditions", func() error {
		var err error
		if rv[0], err = c.accepted(t, ns, "servers", "ha-all", metav1.ConditionTrue, "Accepted"); err != nil {
			return err
		}
		rv[1], err = c.accepted(t, ns, "authorizationpolicies", "ha-all", metav1.ConditionTrue, "Accepted")
		return err
	})
	next := c.statusLeader(t)
	t.Logf("status written %s after the kill; leader now %s", time.Since(killed).Round(time.Second), next)
	if next == leader {
		t.Errorf("the killed replica %s still holds the Lease", leader)
	}
	c.checkWrittenOnce(t, ns, rv, writes0)

	if time.Since(started) > load {
		t.Fatalf("the takeover outlasted the load (%s): the result would not cover it", load)
	}
	res := c.jobLoadResult(t, ns, "client", load+2*time.Minute)
	t.Logf("client result: %+v", res)
	if res.OK == 0 || res.Failed != 0 || res.Dropped != 0 {
		t.Errorf("with the leader killed: %d ok, %d failed, %d dropped; want none failed or dropped", res.OK, res.Failed, res.Dropped)
	}
}

// checkWrittenOnce: after a while the objects' resourceVersions have not
// moved (no replica rewrites or flaps the condition); the API server
// served exactly one successful status update per object since before the
// kill, whichever replica sent it; and the live replicas' status-write
// counters say the same (the victim is gone; the others never led).
func (c *cluster) checkWrittenOnce(t *testing.T, ns string, rv [2]string, puts0 map[string]float64) {
	t.Helper()
	time.Sleep(15 * time.Second) // a Lease duration: a second writer would have acted
	for i, res := range []string{"servers", "authorizationpolicies"} {
		now := c.mustRun(t, nil, "-n", ns, "get", res+".policy.trellis.io", "ha-all", "-o", "jsonpath={.metadata.resourceVersion}")
		if now != rv[i] {
			t.Errorf("%s/ha-all written again: resourceVersion %s -> %s", res, rv[i], now)
		}
	}
	puts := c.statusPuts(t)
	for _, res := range []string{"servers", "authorizationpolicies"} {
		if d := puts[res] - puts0[res]; d != 1 {
			t.Errorf("API server: %g successful %s/status updates since the kill, want 1", d, res)
		}
	}
	written := map[string]float64{}
	for _, p := range c.pods(t, "trellis-system", "app.kubernetes.io/name=trellis-controller") {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		m, err := c.metrics(t.Context(), "trellis-system", p.Name, 9996)
		if err != nil {
			t.Fatalf("metrics of %s: %v", p.Name, err)
		}
		t.Logf("%s status writes:\n%s", p.Name, m.Series("trellis_controller_status_writes_total"))
		for _, kind := range []string{"Server", "AuthorizationPolicy"} {
			written[kind] += m.Value("trellis_controller_status_writes_total", map[string]string{"kind": kind, "result": "written"})
		}
	}
	if written["Server"] != 1 || written["AuthorizationPolicy"] != 1 {
		t.Errorf("status writes since the kill, summed over the replicas: %v; want one Server and one AuthorizationPolicy", written)
	}
}

// accepted reads a policy object's Accepted condition and returns its
// resourceVersion when the condition has the status and reason wanted and
// was computed for the object's current generation.
func (c *cluster) accepted(t *testing.T, ns, resource, name string, want metav1.ConditionStatus, reason string) (string, error) {
	out, err := c.run(t.Context(), nil, "-n", ns, "get", resource+".policy.trellis.io", name, "-o", "json")
	if err != nil {
		return "", err
	}
	var obj struct {
		metav1.ObjectMeta `json:"metadata"`
		Status            policyv1.Status `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		return "", fmt.Errorf("%s/%s: %w", resource, name, err)
	}
	for _, cond := range obj.Status.Conditions {
		if cond.Type != "Accepted" {
			continue
		}
		if cond.Status != want || cond.Reason != reason || cond.ObservedGeneration != obj.Generation {
			return "", fmt.Errorf("%s/%s: Accepted=%s (%s, generation %d of %d), want %s (%s)",
				resource, name, cond.Status, cond.Reason, cond.ObservedGeneration, obj.Generation, want, reason)
		}
		return obj.ResourceVersion, nil
	}
	return "", fmt.Errorf("%s/%s: no Accepted condition yet", resource, name)
}

// statusPuts is the API server's count of successful status updates of
// the policy kinds (apiserver_request_total), by resource.
func (c *cluster) statusPuts(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := harness.ParseMetrics(strings.NewReader(c.mustRun(t, nil, "get", "--raw", "/metrics")))
	if err != nil {
		t.Fatalf("API server metrics: %v", err)
	}
	out := map[string]float64{}
	for _, res := range []string{"servers", "authorizationpolicies"} {
		out[res], _ = m.Sum("apiserver_request_total", map[string]string{
			"group": "policy.trellis.io", "resource": res, "subresource": "status", "verb": "PUT", "code": "200"})
	}
	return out
}

// statusLeader is the replica holding the status Lease.
func (c *cluster) statusLeader(t *testing.T) string {
	t.Helper()
	id := c.mustRun(t, nil, "-n", "trellis-system", "get", "lease", "trellis-controller-status", "-o", "jsonpath={.spec.holderIdentity}")
	if id == "" {
		t.Fatal("the status Lease has no holder")
	}
	return id
}

// killContainer SIGKILLs one container of a pod through the node's
// containerd, as a crash or an OOM kill does: no graceful stop, no Lease
// release. The kubelet restarts it.
func (c *cluster) killContainer(t *testing.T, ns, pod, container string) {
	t.Helper()
	var p corev1.Pod
	if err := json.Unmarshal([]byte(c.mustRun(t, nil, "-n", ns, "get", "pod", pod, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name != container {
			continue
		}
		id, ok := strings.CutPrefix(s.ContainerID, "containerd://")
		if !ok || s.State.Running == nil {
			t.Fatalf("pod %s: container %s not running in containerd: %+v", pod, container, s)
		}
		sock := filepath.Join(c.dir, "run", "containerd", "containerd.sock")
		if out, err := c.exec(t.Context(), nil, "ctr", "--address", sock, "-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id); err != nil {
			t.Fatalf("killing %s/%s: %v\n%s", pod, container, err, out)
		}
		return
	}
	t.Fatalf("pod %s has no container %s", pod, container)
}

// TestHAFailover is the suite "ha-failover": with --ha (injector failing
// closed), one controller replica is killed; pods created right after are
// still injected by the two others, and the Deployment heals to 3.
func TestHAFailover(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-ha"
	c.install(t, "--ha")
	c.waitInjector(t)
	victim := c.controllerPod(t)
	c.mustRun(t, nil, "-n", "trellis-system", "delete", "pod", victim, "--grace-period=0", "--force")
	killed := time.Now()

	// Pods created one after the other from the moment of the kill: with
	// failurePolicy Fail a refused webhook call is an error the user sees.
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"e2e-probe-","namespace":"default",` +
		`"annotations":{"trellis.io/inject":"enabled"}},"spec":{"containers":[{"name":"app","image":"` + c.image("demo-app") + `"}]}}`
	var refused []string
	for i := 0; i < 20; i++ {
		out, err := c.run(t.Context(), []byte(pod), "create", "--dry-run=server", "-o", "jsonpath={.spec.initContainers[*].name}", "-f", "-")
		switch {
		case err != nil:
			refused = append(refused, fmt.Sprintf("+%s: %v", time.Since(killed).Round(10*time.Millisecond), err))
		case !strings.Contains(out, "trellis-proxy"):
			refused = append(refused, fmt.Sprintf("+%s: not injected", time.Since(killed).Round(10*time.Millisecond)))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(refused) > 0 {
		t.Errorf("%d of 20 pods created in the 5 s after killing %s were refused or not injected:\n%s", len(refused), victim, strings.Join(refused, "\n"))
	}
	// Real workloads created now are all meshed (deployDemo asserts it).
	c.deployDemo(t, ns, 1)
	c.rollout(t, "trellis-system", "trellis-controller")
	ready := c.mustRun(t, nil, "-n", "trellis-system", "get", "deployment/trellis-controller", "-o", "jsonpath={.status.readyReplicas}")
	if ready != "3" {
		t.Errorf("controller ready replicas after the kill = %q, want 3", ready)
	}
}
