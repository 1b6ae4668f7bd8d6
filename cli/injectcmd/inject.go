// Package injectcmd is `trellis inject`: the proxy injector's mutation
// (package inject) applied offline to Kubernetes manifests, for
// clusters without the webhook or to review what it would do.
package injectcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/version"
)

// maxInput bounds what is read from a file or stdin.
const maxInput = 64 << 20

// New returns the `trellis inject` command.
func New() *cobra.Command {
	var (
		opts    Options
		cfg     inject.Config
		version = version.Version
	)
	cmd := &cobra.Command{
		Use:   "inject FILE|-",
		Short: "Add the Trellis proxy to the pods of Kubernetes manifests",
		Long: `Read Kubernetes manifests (multi-document YAML or JSON, from FILE or "-" for
stdin) and write them to stdout with the Trellis proxy added to every pod
that asks for it, exactly as the injector webhook would.

Pods and the pod templates of Deployments, StatefulSets, DaemonSets,
ReplicaSets, ReplicationControllers, Jobs and CronJobs are injected when
the template (or a Namespace object in the same input) carries
trellis.io/inject: enabled; with --force, templates without any
trellis.io/inject annotation get "enabled" added and are injected too.
Every other object, and templates with trellis.io/inject: disabled, pass
through unchanged. Objects in kube-system and
trellis-system are never injected. Injecting twice changes nothing.

The config.trellis.io/* annotations (sidecar mode, redirection, proxy
resources, skipped and opaque ports) are read as the webhook reads them; a
malformed one is an error and nothing is written. What was done to each
object is reported on stderr. See docs/injection.md.`,
		Example: `  # Inject and apply
  trellis inject deploy.yaml | kubectl apply --server-side -f -

  # Inject every workload of a file, annotated or not
  trellis inject --force app.yaml > app-injected.yaml

  # Inject what is running now
  kubectl get deploy -n shop -o yaml | trellis inject --force - | kubectl apply --server-side -f -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			cfg.Version = version
			opts.Injector = inject.New(cfg)
			var out bytes.Buffer // nothing reaches stdout unless every document is good
			if err := Run(io.LimitReader(in, maxInput), &out, cmd.ErrOrStderr(), opts); err != nil {
				return fmt.Errorf("inject %s: %w", args[0], err)
			}
			_, err := cmd.OutOrStdout().Write(out.Bytes())
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Force, "force", false, "inject every pod template, adding trellis.io/inject: enabled where it is missing")
	f.StringVar(&version, "proxy-version", version, "value of trellis.io/proxy-version and the default image tags")
	f.StringVar(&cfg.ProxyImage, "proxy-image", "", "proxy image (default trellis/proxy:<proxy-version>)")
	f.StringVar(&cfg.InitImage, "init-image", "", "iptables init image (default trellis/init:<proxy-version>)")
	return cmd
}

// Options of Run.
type Options struct {
	Injector *inject.Injector
	// Force injects templates without a trellis.io/inject annotation by
	// adding it.
	Force bool
}

type document struct {
	raw []byte
	obj map[string]any // nil: not a JSON object (comments only, scalars)
}

// Run reads manifests from in and writes them, injected, to out;
// progress and warnings go to log. Objects keep their order; untouched
// documents are copied byte for byte.
func Run(in io.Reader, out, log io.Writer, opts Options) error {
	if opts.Injector == nil {
		opts.Injector = inject.New(inject.Config{})
	}
	docs, err := readDocuments(in)
	if err != nil {
		return err
	}
	// Namespace objects in the input stand in for the cluster's.
	nsAnn := map[string]map[string]string{}
	for i, d := range docs {
		if d.obj != nil && d.obj["kind"] == "Namespace" {
			md, _ := d.obj["metadata"].(map[string]any)
			if err := checkStringMaps(md); err != nil {
				name, _ := md["name"].(string)
				return fmt.Errorf("document %d: namespace %q: %w", i+1, name, err)
			}
			if name, ann := metaOf(d.obj); name != "" {
				nsAnn[name] = ann
			}
		}
	}
	first := true
	for i, d := range docs {
		text := d.raw
		if d.obj != nil {
			changed, err := injectObject(d.obj, nsAnn, opts, log)
			if err != nil {
				return fmt.Errorf("document %d: %w", i+1, err)
			}
			if changed {
				j, err := json.Marshal(d.obj)
				if err != nil {
					return fmt.Errorf("document %d: %w", i+1, err)
				}
				if text, err = yaml.JSONToYAML(j); err != nil {
					return fmt.Errorf("document %d: %w", i+1, err)
				}
			}
		}
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		if !first {
			if _, err := io.WriteString(out, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if _, err := out.Write(text); err != nil {
			return err
		}
		if !bytes.HasSuffix(text, []byte("\n")) {
			if _, err := io.WriteString(out, "\n"); err != nil {
				return err
			}
		}
	}
	return nil
}

func readDocuments(in io.Reader) ([]document, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var docs []document
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		raw = bytes.Clone(raw)
		j, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		var obj map[string]any
		if bytes.HasPrefix(bytes.TrimSpace(j), []byte("{")) {
			if err := json.Unmarshal(j, &obj); err != nil {
				return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
			}
		}
		docs = append(docs, document{raw: raw, obj: obj})
	}
}

// templatePath is where each workload kind keeps its pod template; nil
// for a Pod, which is its own template.
var templatePath = map[string][]string{
	"Pod":                   nil,
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

func metaOf(obj map[string]any) (name string, ann map[string]string) {
	md, _ := obj["metadata"].(map[string]any)
	name, _ = md["name"].(string)
	if a, ok := md["annotations"].(map[string]any); ok {
		ann = map[string]string{}
		for k, v := range a {
			if s, ok := v.(string); ok {
				ann[k] = s
			}
		}
	}
	return name, ann
}

// injectObject injects obj in place (and the items of a List) and says
// whether it changed.
func injectObject(obj map[string]any, nsAnn map[string]map[string]string, opts Options, log io.Writer) (bool, error) {
	kind, _ := obj["kind"].(string)
	if kind == "List" || strings.HasSuffix(kind, "List") && obj["items"] != nil {
		items, _ := obj["items"].([]any)
		changed := false
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			c, err := injectObject(m, nsAnn, opts, log)
			if err != nil {
				return false, fmt.Errorf("item %d: %w", i+1, err)
			}
			changed = changed || c
		}
		return changed, nil
	}
	path, ok := templatePath[kind]
	if !ok {
		return false, nil
	}
	name, _ := metaOf(obj)
	md, _ := obj["metadata"].(map[string]any)
	namespace, _ := md["namespace"].(string)
	what := fmt.Sprintf("%s %q", strings.ToLower(kind), name)
	if namespace != "" {
		what += " in namespace " + namespace
	}

	parent, key := obj, ""
	tpl := obj
	for i, p := range path {
		next, ok := tpl[p].(map[string]any)
		if !ok {
			fmt.Fprintf(log, "%s: no pod template at .%s, left unchanged\n", what, strings.Join(path[:i+1], "."))
			return false, nil
		}
		parent, key, tpl = tpl, p, next
	}
	tplMeta, _ := tpl["metadata"].(map[string]any)
	if err := checkStringMaps(tplMeta); err != nil {
		return false, fmt.Errorf("%s: pod template: %w", what, err)
	}
	raw, err := json.Marshal(tpl)
	if err != nil {
		return false, err
	}
	var orig corev1.PodTemplateSpec
	if err := json.Unmarshal(raw, &orig); err != nil {
		return false, fmt.Errorf("%s: pod template: %w", what, err)
	}
	pod := &corev1.Pod{ObjectMeta: *orig.ObjectMeta.DeepCopy(), Spec: *orig.Spec.DeepCopy()}
	if kind == "Pod" {
		if err := json.Unmarshal(raw, pod); err != nil {
			return false, fmt.Errorf("%s: %w", what, err)
		}
	}
	if _, has := pod.Annotations[k8slabels.AnnotationInject]; opts.Force && !has {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[k8slabels.AnnotationInject] = k8slabels.InjectEnabled
	}
	res, err := opts.Injector.Mutate(pod, namespace, nsAnn[namespace])
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(log, "%s: %s\n", what, w)
	}
	if !res.Injected {
		hint := ""
		if strings.HasPrefix(res.Reason, "no ") {
			hint = " (use --force)"
		}
		fmt.Fprintf(log, "%s: not injected: %s%s\n", what, res.Reason, hint)
		return false, nil
	}

	var from, to any
	if kind == "Pod" {
		var origPod corev1.Pod
		if err := json.Unmarshal(raw, &origPod); err != nil {
			return false, err
		}
		from, to = &origPod, res.Pod
	} else {
		from, to = &orig, &corev1.PodTemplateSpec{ObjectMeta: res.Pod.ObjectMeta, Spec: res.Pod.Spec}
	}
	_, patched, err := inject.PatchFor(raw, from, to)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	var out map[string]any
	if err := json.Unmarshal(patched, &out); err != nil {
		return false, err
	}
	if kind == "Pod" {
		clear(obj)
		for k, v := range out {
			obj[k] = v
		}
	} else {
		parent[key] = out
	}
	fmt.Fprintf(log, "%s: %s\n", what, res.Reason)
	return true, nil
}
