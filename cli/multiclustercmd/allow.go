package multiclustercmd

import (
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

// readerRole is the ClusterRole every link's ServiceAccount is bound to.
const readerRole = "trellis-multicluster-reader"

// tokenSecretName is the Secret in the peer that holds the token of the
// ServiceAccount of the linking cluster.
func tokenSecretName(linked string) string { return mclink.SecretName(linked) + "-token" }

func newAllowCommand() *cobra.Command {
	var (
		linked, ns string
		out        output.Flag
	)
	cmd := &cobra.Command{
		Use:   "allow",
		Short: "Print the read-only account a linked cluster uses in this one, to apply here",
		Long: `Print the objects that let cluster a (--linked-cluster-name) read this
cluster's Services, for "kubectl apply -f -" in this cluster (the peer b):

  ServiceAccount      trellis-link-<a>, in --namespace
  ClusterRole         trellis-multicluster-reader: get, list and watch of
                      Services, EndpointSlices and pods; nothing else
  ClusterRoleBinding  trellis-link-<a>: the role, to the ServiceAccount
  Secret              trellis-link-<a>-token: the ServiceAccount's token,
                      which "trellis multicluster link" reads

Pods are read because a mirror endpoint's mesh identity comes from its
pod's ServiceAccount, and only meshed pods are mirrored. No Secret is
readable and nothing is writable. Nothing is sent to a cluster: the
command only prints.`,
		Example: `  # Let cluster a read this cluster (b)
  trellis multicluster allow --linked-cluster-name a | kubectl --context b apply -f -

  # Take the access back
  trellis multicluster allow --linked-cluster-name a | kubectl --context b delete -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkName("linked-cluster-name", linked); err != nil {
				return err
			}
			objs := allowObjects(linked, ns)
			if out.Format() == output.JSON {
				return output.Write(cmd.OutOrStdout(), output.JSON, list(objs), nil)
			}
			return writeYAML(cmd.OutOrStdout(), objs...)
		},
	}
	cmd.Flags().StringVar(&linked, "linked-cluster-name", "", "name of the cluster that links to this one (a DNS label of at most 20 characters)")
	_ = cmd.MarkFlagRequired("linked-cluster-name")
	addNamespaceFlag(cmd, &ns)
	out.Register(cmd, output.YAML, output.JSON)
	return cmd
}

// allowObjects are the peer's side of a link from cluster linked.
func allowObjects(linked, ns string) []any {
	name := mclink.SecretName(linked)
	labels := func() map[string]string {
		return map[string]string{partOf: "trellis", mclink.LabelLink: linked}
	}
	return []any{
		&corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels()},
		},
		// One role for every link; so it carries no link label, and
		// deleting one link's objects by label leaves the others' role.
		&rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: readerRole, Labels: map[string]string{partOf: "trellis"}},
			Rules:      readerRules(),
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		},
		// A long-lived token the token controller fills in: the linking
		// cluster's controller cannot ask this cluster for fresh ones.
		&corev1.Secret{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{
				Name: tokenSecretName(linked), Namespace: ns, Labels: labels(),
				Annotations: map[string]string{corev1.ServiceAccountNameKey: name},
			},
			Type: corev1.SecretTypeServiceAccountToken,
		},
	}
}

const partOf = "app.kubernetes.io/part-of"

// readerRules are all a linked cluster may do in the peer: read what the
// mirror copies. Pods too: a mirror endpoint's mesh identity is its pod's
// ServiceAccount, and only meshed pods are mirrored. No Secrets, no writes.
func readerRules() []rbacv1.PolicyRule {
	read := []string{"get", "list", "watch"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "pods"}, Verbs: read},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
	}
}

// kubeList is a v1 List, what kubectl prints for several objects as JSON.
type kubeList struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Items      []any  `json:"items"`
}

func list(items []any) kubeList { return kubeList{APIVersion: "v1", Kind: "List", Items: items} }
