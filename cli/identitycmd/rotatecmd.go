package identitycmd

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/complete"
	"github.com/trellis-mesh/trellis/cli/output"
)

func newRotateCommand(now func() time.Time) *cobra.Command {
	var (
		stateDir       string
		stage          string
		status         bool
		proxies        []string
		skipProxies    bool
		proxyTimeout   time.Duration
		anchorValidity time.Duration
		issuerValidity time.Duration
		anchorName     string
		kube           bool
		kubeconfig     string
		kubeContext    string
		namespace      string
		anchorDir      string
		trustDomain    string
		out            output.Flag
	)
	cmd := &cobra.Command{
		Use:   "rotate (--state-dir DIR | --kubernetes --anchor-dir DIR) (--stage STAGE | --status)",
		Short: "Rotate the trust anchor of a local controller or a cluster in three safe stages",
		Long: `Rotate the trust anchor of a local-mode controller (trellis-controller local
--state-dir DIR) with no downtime, in three stages run one after the other:

  add-anchor     create a new anchor (DIR/anchor.next.crt/key) and append it to
                 DIR/bundle.crt, the trust bundle the controller serves; proxies
                 then trust both anchors.
  switch-issuer  a new issuer signed by the new anchor replaces DIR/issuer.crt/key
                 and the new anchor becomes DIR/anchor.crt/key; proxies get
                 certificates from the new chain as they renew. Refused until
                 every proxy reports the new bundle.
  remove-old     drop the old anchor from DIR/bundle.crt. Refused until every
                 proxy reports the new bundle and a certificate from the new
                 anchor's issuer.

Each stage is safe to run again (it says "already done", or finishes an
interrupted run) and refuses to run before the previous one is done.
Proxies are checked through their admin /metrics (--proxy-admin, once per
proxy): trellis_identity_trust_bundle_info{fingerprint} and
trellis_identity_cert_issuer_info{fingerprint,anchor_fingerprint}.
--status shows the stage the state dir is in (-o json|yaml: as a document).

With --kubernetes the same stages work on the cluster of the kubeconfig
(--kubeconfig, --context, else $KUBECONFIG), in namespace trellis-system:
the ConfigMap trellis-trust-anchors (ca-bundle.crt: the bundle the
controller serves to proxies, through --trust-anchors-file) and the Secret
trellis-identity-issuer (tls.crt, tls.key, ca.crt). The new anchor and its
key are written only to the local --anchor-dir (0700, files 0600), never to
the cluster: anchor.next.crt/key until the issuer is switched,
anchor.crt/key afterwards (keep them to sign the next issuer). Every running
meshed pod (label trellis.io/proxied=true) is checked through the API
server's pod proxy (port 4191, /metrics); a proxy that is not ready is named
with the reason. A Secret without the Trellis label
app.kubernetes.io/part-of=trellis belongs to an external CA (cert-manager)
and is never written: add-anchor and remove-old update only the ConfigMap,
and switch-issuer says how to switch the external CA to the new anchor and
whether the proxies are ready for it.`,
		Example: `  # Where are we?
  trellis identity rotate --state-dir ./state --status

  # Stage 1: trust a new anchor
  trellis identity rotate --state-dir ./state --stage add-anchor

  # Stage 2, once every proxy has the new bundle
  trellis identity rotate --state-dir ./state --stage switch-issuer \
    --proxy-admin 127.0.0.1:4191 --proxy-admin 127.0.0.1:4192

  # Stage 3, once every proxy has renewed its certificate
  trellis identity rotate --state-dir ./state --stage remove-old \
    --proxy-admin 127.0.0.1:4191 --proxy-admin 127.0.0.1:4192

  # The same on a cluster; the new anchor's key stays in ./anchor
  trellis identity rotate --kubernetes --status
  trellis identity rotate --kubernetes --status -o json
  trellis identity rotate --kubernetes --anchor-dir ./anchor --stage add-anchor
  trellis identity rotate --kubernetes --anchor-dir ./anchor --stage switch-issuer
  trellis identity rotate --kubernetes --anchor-dir ./anchor --stage remove-old`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status == (stage != "") {
				return errors.New("give exactly one of --stage or --status")
			}
			if !status && out.Format() != output.Text {
				return fmt.Errorf("-o %s: only --status prints a document; a stage prints what it does", out.Format())
			}
			printStatus := func(d statusDoc) error {
				return out.Print(cmd.OutOrStdout(), d, func(w io.Writer) error { return printStatusDoc(w, d) })
			}
			if kube == (stateDir != "") {
				return errors.New("give exactly one of --state-dir (local controller) or --kubernetes (cluster)")
			}
			if kube {
				return runKubeRotate(cmd, kubeRun{
					kubeconfig: kubeconfig, context: kubeContext, namespace: namespace, anchorDir: anchorDir,
					stage: stage, status: status, printStatus: printStatus, skipProxies: skipProxies, proxyTimeout: proxyTimeout,
					opts: kubeOptions{rotateOptions: rotateOptions{
						anchorValidity: anchorValidity, issuerValidity: issuerValidity,
						anchorName: anchorName, issuerName: defaultIssuerName, now: now(),
					}, trustDomain: trustDomain},
				})
			}
			s, err := loadRotationState(stateDir)
			if err != nil {
				return err
			}
			if status {
				return printStatus(localStatus(s, now()))
			}
			if anchorValidity <= 0 || issuerValidity <= 0 {
				return errors.New("--anchor-validity and --issuer-validity must be positive")
			}
			o := rotateOptions{
				anchorValidity: anchorValidity,
				issuerValidity: issuerValidity,
				anchorName:     anchorName,
				issuerName:     defaultIssuerName,
				now:            now(),
				checkProxies:   proxyChecker(cmd.Context(), proxies, skipProxies, proxyTimeout, cmd.ErrOrStderr()),
			}
			err = runStage(s, stage, o, cmd.OutOrStdout())
			if errors.Is(err, errAlreadyDone) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("rotate: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", "", "the local controller's --state-dir")
	f.BoolVar(&kube, "kubernetes", false, "rotate the cluster's issuer Secret and trust-anchors ConfigMap instead of a state dir")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (--kubernetes; default $KUBECONFIG, then ~/.kube/config)")
	f.StringVar(&kubeContext, "context", "", "kubeconfig context (--kubernetes; default the current one)")
	f.StringVar(&namespace, "namespace", "trellis-system", "namespace of the control plane (--kubernetes)")
	_ = cmd.RegisterFlagCompletionFunc("namespace", complete.Namespaces(complete.FromKubeconfig))
	f.StringVar(&anchorDir, "anchor-dir", "", "local directory for the new anchor and its key (--kubernetes; required with --stage)")
	f.StringVar(&trustDomain, "trust-domain", "cluster.local", "trust domain the new issuer may sign in (--kubernetes)")
	f.StringVar(&stage, "stage", "", "stage to run: add-anchor, switch-issuer or remove-old")
	f.BoolVar(&status, "status", false, "show the rotation stage of the state dir and change nothing")
	f.StringArrayVar(&proxies, "proxy-admin", nil, "admin address host:port of a proxy (repeat for every proxy)")
	f.BoolVar(&skipProxies, "skip-proxy-check", false, "do not check proxies (only when none is running: traffic may fail otherwise)")
	f.DurationVar(&proxyTimeout, "proxy-timeout", 5*time.Second, "timeout for reading one proxy's metrics")
	f.DurationVar(&anchorValidity, "anchor-validity", defaultAnchorValidity, "validity of the new anchor (add-anchor)")
	f.DurationVar(&issuerValidity, "issuer-validity", defaultIssuerValidity, "validity of the new issuer (switch-issuer)")
	f.StringVar(&anchorName, "anchor-name", "", "common name of the new anchor (default trellis-anchor-<UTC time>)")
	out.Register(cmd, output.Text, output.JSON, output.YAML)
	return cmd
}
