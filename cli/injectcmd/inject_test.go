package injectcmd

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"bufio"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// run executes `trellis inject args...` with stdin and returns stdout and
// stderr.
func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := New()
	var out, errOut bytes.Buffer
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func splitDocs(t *testing.T, s string) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, bytes.Clone(d))
	}
}

func containerNames(cs []corev1.Container) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

// statusField matches a status: key (a defaulted field), not the injected
// env fieldRef status.podIP.
var statusField = regexp.MustCompile(`(?m)^\s*status:`)

func TestInjectFile(t *testing.T) {
	out, log, err := run(t, "", "--proxy-version", "v7", "testdata/app.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	docs := splitDocs(t, out)
	if len(docs) != 6 {
		t.Fatalf("%d documents out:\n%s", len(docs), out)
	}
	// Not workloads: copied byte for byte, comments included.
	if !strings.Contains(string(docs[1]), "targetPort: 8080 # keep this comment") {
		t.Errorf("service changed:\n%s", docs[1])
	}

	var dep appsv1.Deployment
	if err := yaml.UnmarshalStrict(docs[2], &dep); err != nil {
		t.Fatal(err)
	}
	tpl := dep.Spec.Template
	if got := containerNames(tpl.Spec.InitContainers); got != "trellis-init,trellis-proxy" {
		t.Errorf("deployment init containers %q", got)
	}
	if got := containerNames(tpl.Spec.Containers); got != "web" {
		t.Errorf("deployment containers %q", got)
	}
	if tpl.Annotations[k8slabels.AnnotationProxyVersion] != "v7" || tpl.Labels[k8slabels.LabelProxied] != "true" || tpl.Labels["app"] != "web" {
		t.Errorf("template metadata %v %v", tpl.Annotations, tpl.Labels)
	}
	if img := tpl.Spec.InitContainers[1].Image; img != "trellis/proxy:v7" {
		t.Errorf("proxy image %q", img)
	}
	// The proxy's state volume (its trust anchors cache) survives the
	// YAML round trip: in-memory, size-limited, mounted into the proxy only.
	var state *corev1.Volume
	for i, v := range tpl.Spec.Volumes {
		if v.Name == inject.StateVolumeName {
			state = &tpl.Spec.Volumes[i]
		}
	}
	if state == nil || state.EmptyDir == nil || state.EmptyDir.Medium != corev1.StorageMediumMemory || state.EmptyDir.SizeLimit == nil || state.EmptyDir.SizeLimit.String() != "1Mi" {
		t.Errorf("deployment state volume %+v", state)
	}
	if m := tpl.Spec.InitContainers[1].VolumeMounts; len(m) != 3 || m[2].Name != inject.StateVolumeName || m[2].ReadOnly {
		t.Errorf("proxy volume mounts %+v", m)
	}
	if args := strings.Join(tpl.Spec.InitContainers[0].Args, " "); !strings.HasSuffix(args, "--skip-outbound-ports 5432") {
		t.Errorf("init args %q", args)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 || dep.Name != "web" {
		t.Errorf("deployment spec changed: %+v", dep.Spec)
	}
	if strings.Contains(string(docs[2]), "creationTimestamp") || statusField.Match(docs[2]) {
		t.Errorf("defaulted fields added:\n%s", docs[2])
	}

	var job batchv1.Job
	if err := yaml.UnmarshalStrict(docs[3], &job); err != nil {
		t.Fatal(err)
	}
	if got := containerNames(job.Spec.Template.Spec.InitContainers); got != "trellis-init,trellis-proxy" {
		t.Errorf("job init containers %q", got)
	}
	if rp := job.Spec.Template.Spec.InitContainers[1].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Error("job proxy is not a native sidecar")
	}

	// No annotation without --force, kube-system never: unchanged.
	in, err := os.ReadFile("testdata/app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inDocs := splitDocs(t, string(in))
	for _, i := range []int{4, 5} {
		if !bytes.Equal(docs[i], inDocs[i]) {
			t.Errorf("document %d changed:\n%s", i+1, docs[i])
		}
	}
	for _, want := range []string{
		`deployment "web" in namespace shop: injected (native sidecar, init redirection)`,
		`job "migrate" in namespace other: injected`,
		`cronjob "report" in namespace other: not injected: no trellis.io/inject annotation on pod or namespace (use --force)`,
		`daemonset "agent" in namespace kube-system: not injected: namespace kube-system is never injected`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q:\n%s", want, log)
		}
	}

	// Injecting the output again changes nothing.
	again, _, err := run(t, out, "--proxy-version", "v7", "-")
	if err != nil {
		t.Fatal(err)
	}
	if again != out {
		t.Errorf("second injection changed the output:\n%s", again)
	}
}

func TestInjectForce(t *testing.T) {
	out, log, err := run(t, "", "--force", "testdata/app.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	docs := splitDocs(t, out)
	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict(docs[4], &cj); err != nil {
		t.Fatal(err)
	}
	tpl := cj.Spec.JobTemplate.Spec.Template
	if tpl.Annotations[k8slabels.AnnotationInject] != k8slabels.InjectEnabled {
		t.Errorf("--force did not add the annotation: %v", tpl.Annotations)
	}
	if got := containerNames(tpl.Spec.InitContainers); got != "trellis-init,trellis-proxy" {
		t.Errorf("cronjob init containers %q", got)
	}
	if strings.Contains(string(docs[5]), "trellis-proxy") {
		t.Error("--force injected kube-system")
	}
}

func TestInjectPodsAndLists(t *testing.T) {
	in := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata:
    name: a
    annotations:
      trellis.io/inject: enabled
      config.trellis.io/sidecar-mode: classic
      config.trellis.io/redirect: cni
  spec:
    containers:
    - name: app
      image: app:1
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
  data: {k: v}
`
	out, log, err := run(t, in, "-")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	var list corev1.List
	if err := yaml.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(list.Items[0].Raw, &pod); err != nil {
		t.Fatal(err)
	}
	if got := containerNames(pod.Spec.Containers); got != "trellis-proxy,app" {
		t.Errorf("classic containers %q", got)
	}
	// CNI mode: only the capability-free redirection check runs before
	// the proxy, no iptables init container.
	if got := containerNames(pod.Spec.InitContainers); got != "trellis-validate" {
		t.Errorf("cni mode init containers %q, want trellis-validate", got)
	}
	for _, c := range pod.Spec.InitContainers {
		if sc := c.SecurityContext; sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 {
			t.Errorf("init container %s adds capabilities: %+v", c.Name, sc)
		}
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal(list.Items[1].Raw, &cm); err != nil || !reflect.DeepEqual(cm.Data, map[string]string{"k": "v"}) {
		t.Errorf("configmap %v %v", cm.Data, err)
	}
}

func TestInjectErrors(t *testing.T) {
	bad := `apiVersion: v1
kind: Service
metadata: {name: s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata:
      annotations:
        trellis.io/inject: enabled
        config.trellis.io/proxy-memory-limit: plenty
    spec:
      containers: [{name: web, image: web}]
`
	for _, tc := range []struct {
		name, in string
		args     []string
		want     string
	}{
		{"bad annotation", bad, []string{"-"}, `document 2: deployment "web": annotation config.trellis.io/proxy-memory-limit="plenty": not a quantity`},
		{"bad yaml", "kind: Pod\n  metadata: [\n", []string{"-"}, "document 1"},
		{"unquoted yes on a template", strings.Replace(bad, "inject: enabled", "inject: yes", 1), []string{"-"},
			`document 2: deployment "web": pod template: annotation trellis.io/inject: the unquoted YAML value was read as the boolean true (an unquoted yes`},
		{"unquoted on and a number, both named", strings.Replace(bad, "inject: enabled", "inject: on\n        config.trellis.io/skip-inbound-ports: 8080", 1), []string{"-"},
			"annotation config.trellis.io/skip-inbound-ports: the unquoted YAML value was read as the number 8080; annotation trellis.io/inject: the unquoted YAML value was read as the boolean true"},
		{"unquoted yes on a namespace", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations: {trellis.io/inject: yes}\n", []string{"-"},
			`document 1: namespace "shop": annotation trellis.io/inject: the unquoted YAML value was read as the boolean true`},
		{"missing file", "", []string{"testdata/nope.yaml"}, "no such file"},
		{"no argument", "", []string{}, "accepts 1 arg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, tc.in, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("partial output on error:\n%s", out)
			}
		})
	}
}
