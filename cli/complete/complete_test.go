package complete

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

// complete runs cobra's completion request for args against a command
// using Namespaces for -n and Workloads for its argument.
func complete(t *testing.T, client Client, args ...string) []string {
	t.Helper()
	cmd := &cobra.Command{Use: "thing", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().StringP("namespace", "n", "", "")
	cmd.Flags().String("kubeconfig", "", "")
	cmd.Flags().String("context", "", "")
	_ = cmd.RegisterFlagCompletionFunc("namespace", Namespaces(client))
	cmd.ValidArgsFunction = Workloads(client)
	root := &cobra.Command{Use: "trellis"}
	root.AddCommand(cmd)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(append([]string{cobra.ShellCompRequestCmd, "thing"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(l, ":") && !strings.HasPrefix(l, "Completion ended") {
			got = append(got, l)
		}
	}
	return got
}

func TestCompletion(t *testing.T) {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	kube := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: meta("", "shop")}, &corev1.Namespace{ObjectMeta: meta("", "books")},
		&appsv1.Deployment{ObjectMeta: meta("shop", "web")}, &appsv1.StatefulSet{ObjectMeta: meta("shop", "db")},
		&appsv1.DaemonSet{ObjectMeta: meta("shop", "agent")}, &appsv1.Deployment{ObjectMeta: meta("books", "authors")},
	)
	var gotKubeconfig string
	client := func(path, _ string) (kubernetes.Interface, error) { gotKubeconfig = path; return kube, nil }
	if got := strings.Join(complete(t, client, "-n", ""), " "); got != "books shop" {
		t.Errorf("namespaces = %q", got)
	}
	if got := strings.Join(complete(t, client, "-n", "shop", "--kubeconfig", "/k", ""), " "); got != "daemonset/agent deployment/web statefulset/db" {
		t.Errorf("workloads of shop = %q", got)
	}
	if gotKubeconfig != "/k" {
		t.Errorf("--kubeconfig not used: %q", gotKubeconfig)
	}
	failing := func(string, string) (kubernetes.Interface, error) { return nil, errNoCluster }
	if got := complete(t, failing, "-n", ""); len(got) != 0 {
		t.Errorf("without a cluster: %q", got)
	}
}

// TestMeshedWorkloads: the service accounts of the namespace's meshed
// pods, once each; unmeshed pods and other namespaces are left out.
func TestMeshedWorkloads(t *testing.T) {
	pod := func(ns, name, sa string, meshed bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{ServiceAccountName: sa}}
		if meshed {
			p.Labels = map[string]string{"trellis.io/proxied": "true"}
		}
		return p
	}
	kube := fake.NewClientset(pod("shop", "web-1", "web", true), pod("shop", "web-2", "web", true), pod("shop", "books-1", "books", true),
		pod("shop", "legacy-1", "legacy", false), pod("other", "x-1", "x", true))
	client := func(string, string) (kubernetes.Interface, error) { return kube, nil }
	cmd := &cobra.Command{Use: "thing"}
	cmd.Flags().StringP("namespace", "n", "", "")
	if err := cmd.Flags().Set("namespace", "shop"); err != nil {
		t.Fatal(err)
	}
	got, _ := MeshedWorkloads(client)(cmd, nil, "")
	if strings.Join(got, " ") != "books web" {
		t.Errorf("meshed workloads of shop = %q", got)
	}
}

var errNoCluster = errors.New("no cluster")
