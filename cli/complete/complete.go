// Package complete gives shell completion of cluster names (namespaces,
// workloads) to any trellis command with --kubeconfig and --context flags:
//
//	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(build))
//	cmd.ValidArgsFunction = complete.Workloads(build) // reads -n/--namespace
//
// Completion never fails loudly: without a cluster it offers nothing.
package complete

import (
	"context"
	"slices"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Client builds the clientset for the command's --kubeconfig and --context.
type Client func(kubeconfigPath, kubeContext string) (kubernetes.Interface, error)

// FromKubeconfig is the Client of a real cluster.
func FromKubeconfig(kubeconfigPath, kubeContext string) (kubernetes.Interface, error) {
	cfg, err := kubeconfig.Load(kubeconfigPath, kubeContext)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Func is a cobra completion function.
type Func = func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective)

// timeout bounds a completion: a shell waits for it.
const timeout = 5 * time.Second

// Namespaces completes namespace names.
func Namespaces(client Client) Func {
	return func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		kube, ctx, cancel, ok := connect(cmd, client)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := make([]string, 0, len(list.Items))
		for _, n := range list.Items {
			names = append(names, n.Name)
		}
		slices.Sort(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// Workloads completes the Deployments, StatefulSets and DaemonSets of the
// command's -n namespace (default "default") as kind/name.
func Workloads(client Client) Func {
	return inNamespace(client, func(ctx context.Context, kube kubernetes.Interface, ns string) []string {
		var names []string
		if l, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err == nil {
			for _, o := range l.Items {
				names = append(names, "deployment/"+o.Name)
			}
		}
		if l, err := kube.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{}); err == nil {
			for _, o := range l.Items {
				names = append(names, "statefulset/"+o.Name)
			}
		}
		if l, err := kube.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{}); err == nil {
			for _, o := range l.Items {
				names = append(names, "daemonset/"+o.Name)
			}
		}
		return names
	})
}

// MeshedWorkloads completes the service accounts of the meshed pods (label
// trellis.io/proxied=true) of the command's -n namespace: the workload
// names of `trellis authz` and `policy explain --to`, which count per
// service account.
func MeshedWorkloads(client Client) Func {
	return inNamespace(client, func(ctx context.Context, kube kubernetes.Interface, ns string) []string {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: k8slabels.LabelProxied + "=true"})
		if err != nil {
			return nil
		}
		var names []string
		for _, p := range pods.Items {
			if sa := p.Spec.ServiceAccountName; sa != "" && !slices.Contains(names, sa) {
				names = append(names, sa)
			}
		}
		return names
	})
}

// inNamespace completes the sorted names list returns for the command's
// -n namespace (default "default").
func inNamespace(client Client, list func(context.Context, kubernetes.Interface, string) []string) Func {
	return func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		kube, ctx, cancel, ok := connect(cmd, client)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		ns := flag(cmd, "namespace")
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		names := list(ctx, kube, ns)
		slices.Sort(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

func connect(cmd *cobra.Command, client Client) (kubernetes.Interface, context.Context, context.CancelFunc, bool) {
	kube, err := client(flag(cmd, "kubeconfig"), flag(cmd, "context"))
	if err != nil {
		return nil, nil, nil, false
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return kube, ctx, cancel, true
}

// flag is the value of a flag of cmd, "" when it has none.
func flag(cmd *cobra.Command, name string) string {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}
