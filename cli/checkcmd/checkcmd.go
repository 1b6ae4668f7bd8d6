// Package checkcmd is `trellis check`: it builds a check.Env from a
// kubeconfig, picks the checks (--pre, --proxy or the whole installation),
// prints the results and fails the command when a check fails.
package checkcmd

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/complete"
	kubeconfigpkg "github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/internal/version"
)

// ErrChecksFailed is returned (so the process exits 1) when any check
// failed; warnings alone do not.
var ErrChecksFailed = errors.New("checks failed")

// options are the flags.
type options struct {
	kubeconfig     string
	context        string
	pre            bool
	proxy          bool
	namespace      string
	output         output.Flag
	probeNamespace string
	timeout        time.Duration
	wait           time.Duration
	multicluster   bool
	peerKubeconfig string
	peerContext    string
}

// EnvFunc builds the Env the checks run against.
type EnvFunc func(kubeconfig, context string) (*check.Env, error)

// New returns the `trellis check` command for the cluster of the kubeconfig.
func New() *cobra.Command {
	return newCommand(FromKubeconfig)
}

// FromKubeconfig loads a kubeconfig the way kubectl does: the explicit
// path, else $KUBECONFIG, else ~/.kube/config; context overrides the
// current context.
func FromKubeconfig(kubeconfig, context string) (*check.Env, error) {
	cfg, err := kubeconfigpkg.Load(kubeconfig, context)
	if err != nil {
		return nil, err
	}
	return check.NewEnv(cfg)
}

func newCommand(build EnvFunc) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that a cluster can run Trellis, or that Trellis runs well in it",
		Long: `Check a Kubernetes cluster and the Trellis installation in it.

  --pre     before installing: Kubernetes version, native sidecars, the
            rights trellis install needs, clock skew, conflicting CRDs or an
            existing installation
  (none)    after installing: the control plane is ready, the injector
            webhook is reachable with a caBundle that verifies its
            certificate, the trust anchors and issuer are valid with time
            left, no pod where injection is enabled runs without a proxy,
            and every meshed pod's proxy is ready, on the control plane's
            version and holds a certificate
  --proxy   only the data-plane checks (of one namespace with -n)
  --multicluster
            this cluster and a peer (--peer-kubeconfig, --peer-context)
            trust each other's issuers, and each cluster's identities are
            its own: different trust domains, and neither issuer can sign
            in the other's; with links in this cluster, also their health:
            last sync, services and endpoints mirrored (docs/multicluster.md)

Every failure prints a one-line hint and a link to docs/check.md. The exit
status is 1 when any check fails; warnings alone exit 0. With --wait, failing
checks are run again every few seconds until they pass or the time is up
(right after an install or upgrade, before the control plane is ready).`,
		Example: `  # Before installing
  trellis check --pre

  # After installing, as JSON
  trellis check -o json

  # The proxies of one namespace
  trellis check --proxy -n emojivoto

  # Right after trellis install: wait up to 2 minutes for everything to pass
  trellis check --wait 2m

  # Two clusters sharing a trust anchor: do they trust each other?
  trellis check --multicluster --context east --peer-context west`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true, // a failed check is not a usage error
		SilenceErrors: true, // main prints the error once
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd, build, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context to use (default the current context)")
	f.BoolVar(&o.pre, "pre", false, "run the pre-installation checks")
	f.BoolVar(&o.proxy, "proxy", false, "run only the data-plane checks")
	f.StringVarP(&o.namespace, "namespace", "n", "", "limit the data-plane checks to this namespace (default all namespaces)")
	o.output.Register(cmd, output.Text, output.JSON, output.YAML)
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	f.StringVar(&o.probeNamespace, "probe-namespace", "default", "namespace for the dry-run pods of the native-sidecar and webhook probes (nothing is stored)")
	f.DurationVar(&o.timeout, "timeout", 20*time.Second, "time limit of each check (checks that visit every proxy get at least 2m)")
	f.DurationVar(&o.wait, "wait", 0, "run the checks again until none fails or this much time has passed (0: once)")
	f.BoolVar(&o.multicluster, "multicluster", false, "run only the multicluster checks, against the peer cluster")
	f.StringVar(&o.peerKubeconfig, "peer-kubeconfig", "", "kubeconfig of the peer cluster (--multicluster; default the same as --kubeconfig)")
	f.StringVar(&o.peerContext, "peer-context", "", "kubeconfig context of the peer cluster (--multicluster)")
	cmd.MarkFlagsMutuallyExclusive("pre", "proxy", "multicluster")
	return cmd
}

func run(cmd *cobra.Command, build EnvFunc, o options) error {
	if o.wait < 0 {
		return fmt.Errorf("--wait %s: must not be negative", o.wait)
	}
	if o.pre && o.namespace != "" {
		return errors.New("--namespace applies to the data-plane checks, not to --pre")
	}
	if !o.multicluster && (o.peerKubeconfig != "" || o.peerContext != "") {
		return errors.New("--peer-kubeconfig and --peer-context go with --multicluster")
	}
	if o.multicluster && o.peerKubeconfig == "" && o.peerContext == "" {
		return errors.New("--multicluster needs the peer cluster: --peer-kubeconfig FILE and/or --peer-context NAME")
	}
	env, err := build(o.kubeconfig, o.context)
	if err != nil {
		return err
	}
	if o.multicluster {
		peerConfig := cmp.Or(o.peerKubeconfig, o.kubeconfig)
		if env.Peer, err = build(peerConfig, o.peerContext); err != nil {
			return fmt.Errorf("the peer cluster: %w", err)
		}
		env.PeerName = peerName(o.peerContext, o.peerKubeconfig)
		env.Peer.Now, env.Peer.CheckTimeout = env.Now, o.timeout
	}
	env.ProxyNamespace = o.namespace
	env.ProbeNamespace = o.probeNamespace
	env.CheckTimeout = o.timeout
	env.WebhookSettle = webhookSettle
	if env.CLIVersion == "" {
		env.CLIVersion = version.Version
	}
	checks := check.PostChecks()
	switch {
	case o.pre:
		checks = check.PreChecks()
	case o.proxy:
		checks = check.ProxyChecks()
	case o.multicluster:
		checks = check.MulticlusterChecks()
	}
	results := runWaiting(cmd, env, checks, o.wait)
	out := cmd.OutOrStdout()
	err = o.output.Print(out, check.NewReport(results), func(w io.Writer) error {
		return check.WriteText(w, results, useColor(out))
	})
	if err != nil {
		return err
	}
	if check.Summarize(results).Failed() {
		return output.Reported{Err: ErrChecksFailed} // the report says which
	}
	return nil
}

// peerName names the peer cluster in messages: its context, its
// kubeconfig, or both.
func peerName(context, kubeconfig string) string {
	switch {
	case context == "":
		return kubeconfig
	case kubeconfig == "":
		return context
	}
	return context + " (" + kubeconfig + ")"
}

// webhookSettle is how long the webhook-call check retries an uninjected
// dry-run pod: longer than the gap seen right after a controller rollout
// (1-2 s while kube-proxy programs the Service), far shorter than a check.
const webhookSettle = 10 * time.Second

// waitInterval is the pause between rounds of --wait.
const waitInterval = 3 * time.Second

// runWaiting runs the checks, and with wait > 0 runs them again while any
// fails and time is left, saying on stderr what it waits for.
func runWaiting(cmd *cobra.Command, env *check.Env, checks []check.Check, wait time.Duration) []check.Result {
	ctx := cmd.Context()
	deadline := time.Now().Add(wait)
	for {
		results := check.Run(ctx, env, checks)
		if !check.Summarize(results).Failed() || !time.Now().Before(deadline) || ctx.Err() != nil {
			return results
		}
		for _, r := range results {
			if r.Status == check.Fail {
				fmt.Fprintf(cmd.ErrOrStderr(), "waiting (%s left): %s: %s\n", time.Until(deadline).Round(time.Second), r.Name, r.Message)
				break
			}
		}
		t := time.NewTimer(min(waitInterval, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return results
		case <-t.C:
		}
	}
}

// useColor is true for a terminal, unless NO_COLOR is set (no-color.org).
func useColor(w io.Writer) bool {
	f, isFile := w.(*os.File)
	if !isFile || os.Getenv("NO_COLOR") != "" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
