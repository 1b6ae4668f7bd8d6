package diagcmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/internal/destdebug"
)

// ReplicaEndpoints is one controller replica's answer.
type ReplicaEndpoints struct {
	Namespace string            `json:"namespace,omitempty"`
	Pod       string            `json:"pod"`
	Error     string            `json:"error,omitempty"`
	Answer    *destdebug.Answer `json:"answer,omitempty"`
}

// Authority turns SERVICE[:PORT] into the authority a proxy asks for: a
// name without dots is a service of namespace; PORT defaults to 80.
func Authority(arg, namespace, clusterDomain string) (string, error) {
	host, port, err := net.SplitHostPort(arg)
	if err != nil {
		host, port = arg, "80"
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return "", fmt.Errorf("service %q: want SERVICE[:PORT] or a full authority (name.namespace.svc.%s:port)", arg, clusterDomain)
	}
	if !strings.Contains(host, ".") {
		host = host + "." + namespace + ".svc." + clusterDomain
	}
	return net.JoinHostPort(host, port), nil
}

func newEndpoints(build checkcmd.EnvFunc) *cobra.Command {
	var (
		c                    common
		admin, clusterDomain string
	)
	cmd := &cobra.Command{
		Use:   "endpoints SERVICE[:PORT]",
		Short: "Show what the controller's Destination service answers for a service now",
		Long: `Ask every controller replica what its Destination service answers right
now for SERVICE[:PORT] (PORT defaults to 80; a name with dots is taken as a
full authority): the addresses a proxy would balance over, their weights,
the identity each must prove (none: not meshed, plain text), zone, protocol
hint and target port.

It reads the controller's read-only admin endpoint /debug/destination
through the API server's pod proxy (RBAC: get pods/proxy in trellis-system,
as controller-metrics), not Destination.Get itself: that would need a
port-forward (create pods/portforward: raw TCP to every port of the
controller) for the same answer. Replicas answer from their own caches, so
this also shows a replica lagging behind the others.

With --controller-admin it asks the local controller (trellis demo).`,
		Example: `  # The demo's books service, port 8080
  trellis diagnostics endpoints books:8080 -n trellis-demo

  # A full authority, as JSON
  trellis diagnostics endpoints books.trellis-demo.svc.cluster.local:8080 -o json

  # The local demo's controller
  trellis diagnostics endpoints books:7001 -n demo --controller-admin 127.0.0.1:9996`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			auth, err := Authority(args[0], c.namespace, clusterDomain)
			if err != nil {
				return err
			}
			reps, err := controllerGet(cmd.Context(), &c, build, admin, strings.TrimPrefix(destdebug.Path, "/")+"/"+url.PathEscape(auth))
			if err != nil {
				return err
			}
			out := make([]ReplicaEndpoints, len(reps))
			for i, r := range reps {
				out[i] = ReplicaEndpoints{Namespace: r.Namespace, Pod: r.Pod}
				if r.Err == nil {
					var a destdebug.Answer
					if err := json.Unmarshal(r.Raw, &a); err != nil {
						r.Err = fmt.Errorf("answer: %w", err)
					} else {
						out[i].Answer = &a
					}
				}
				if r.Err != nil {
					out[i].Error = r.Err.Error()
				}
			}
			return c.out.Print(cmd.OutOrStdout(), out, func(w io.Writer) error { return writeEndpoints(w, auth, out) })
		},
	}
	c.flags(cmd, true)
	c.controllerFlags(cmd, &admin)
	cmd.Flags().StringVar(&clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain, to complete SERVICE")
	return cmd
}

func writeEndpoints(w io.Writer, auth string, reps []ReplicaEndpoints) error {
	for _, r := range reps {
		fmt.Fprintf(w, "controller %s: ", strings.TrimPrefix(r.Namespace+"/"+r.Pod, "/"))
		switch {
		case r.Error != "":
			fmt.Fprintf(w, "unreadable: %s\n", r.Error)
			continue
		case !r.Answer.Exists:
			fmt.Fprintf(w, "%s names nothing the controller knows (no such service or port)\n", auth)
			continue
		case len(r.Answer.Endpoints) == 0:
			fmt.Fprintf(w, "%s exists but has no endpoints (no ready pod)\n", auth)
			continue
		}
		fmt.Fprintf(w, "%s (%d endpoints)\n", auth, len(r.Answer.Endpoints))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tIDENTITY\tZONE\tWEIGHT\tPROTOCOL\tTARGET PORT")
		for _, e := range r.Answer.Endpoints {
			id := e.Identity
			if id == "" {
				id = "(not meshed: plain text)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.Address, id, dash(e.Zone), e.Weight, e.Protocol, port(e.TargetPort))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func port(p uint32) string {
	if p == 0 {
		return "-"
	}
	return fmt.Sprint(p)
}
