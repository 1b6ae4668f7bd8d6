// Package install renders the Trellis control plane and CRDs from the Helm
// chart in charts/trellis (embedded), generates or loads the identity
// material it needs, and finds, applies or deletes installed objects
// through client-go. `trellis install`, `upgrade` and `uninstall` are thin
// layers over it.
package install

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"sigs.k8s.io/yaml"

	chart "github.com/trellis-mesh/trellis/charts/trellis"
)

// Namespace is where the control plane lives (docs/install.md).
const Namespace = "trellis-system"

// CNINamespace holds the trellis-cni installer DaemonSet (--cni): its
// hostPath volumes need the privileged Pod Security level, which
// trellis-system (restricted) refuses.
const CNINamespace = "trellis-cni"

// Labels every installed object carries; uninstall deletes by them.
const (
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelValue     = "trellis"
	// Selector selects what Trellis installed.
	Selector = LabelPartOf + "=" + LabelValue + "," + LabelManagedBy + "=" + LabelValue
)

// chartMeta is the part of Chart.yaml templates see as .Chart.
type chartMeta struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

// renderChart executes every template of the chart (files not starting
// with '_') the way Helm does, with the subset of Helm's and sprig's
// functions the chart uses, and returns the objects they produce.
// appVersion replaces Chart.yaml's (the CLI's version), unless empty.
func renderChart(values Values, appVersion string) ([]Object, error) {
	meta, err := readChartMeta()
	if err != nil {
		return nil, err
	}
	if appVersion != "" {
		meta.AppVersion = appVersion
	}
	root := template.New("trellis")
	root.Option("missingkey=zero") // as Helm, which then drops "<no value>"
	root.Funcs(funcMap(root))
	names, err := fs.Glob(chart.FS, "templates/*")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	for _, n := range names {
		src, err := fs.ReadFile(chart.FS, n)
		if err != nil {
			return nil, err
		}
		// Template names like Helm's, so errors point at the file.
		if _, err := root.New("trellis/" + n).Parse(string(src)); err != nil {
			return nil, fmt.Errorf("chart template: %w", err)
		}
	}
	data := map[string]any{
		"Values": map[string]any(values),
		"Release": map[string]any{
			"Name": "trellis", "Namespace": Namespace, "Service": "trellis",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart": map[string]any{"Name": meta.Name, "Version": meta.Version, "AppVersion": meta.AppVersion},
	}
	var objs []Object
	for _, n := range names {
		if strings.HasPrefix(path.Base(n), "_") {
			continue
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, "trellis/"+n, data); err != nil {
			return nil, cleanTemplateError(err)
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		docs, err := ParseDocuments([]byte(out), n)
		if err != nil {
			return nil, err
		}
		objs = append(objs, docs...)
	}
	return objs, nil
}

func readChartMeta() (chartMeta, error) {
	var m chartMeta
	data, err := fs.ReadFile(chart.FS, "Chart.yaml")
	if err != nil {
		return m, err
	}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("chart metadata (Chart.yaml): %w", err)
	}
	return m, nil
}

// failError carries a message from the chart's `fail` and `required`,
// which is meant for the user as is.
type failError struct{ msg string }

func (e failError) Error() string { return e.msg }

// cleanTemplateError returns the chart's own message when the template
// failed on purpose, without text/template's position prefix.
func cleanTemplateError(err error) error {
	var fe failError
	if errors.As(err, &fe) {
		return fmt.Errorf("render chart: %w", fe)
	}
	return fmt.Errorf("render chart: %w", err)
}

// funcMap is the subset of Helm's template functions the chart uses, with
// Helm's (sprig's) semantics.
func funcMap(root *template.Template) template.FuncMap {
	return template.FuncMap{
		"include": func(name string, data any) (string, error) {
			var buf bytes.Buffer
			if err := root.ExecuteTemplate(&buf, name, data); err != nil {
				return "", err
			}
			return buf.String(), nil
		},
		"required": func(msg string, v any) (any, error) {
			if v == nil {
				return nil, failError{msg}
			}
			if s, ok := v.(string); ok && s == "" {
				return nil, failError{msg}
			}
			return v, nil
		},
		"fail": func(msg string) (string, error) { return "", failError{msg} },
		// lookup answers nothing, as under "helm template": trellis
		// install reads the cluster's install itself (DetectExisting)
		// and passes its material as values.
		"lookup": func(apiVersion, kind, namespace, name string) map[string]any { return map[string]any{} },
		"default": func(d any, given ...any) any {
			if len(given) == 0 || empty(given[0]) {
				return d
			}
			return given[0]
		},
		"quote": func(args ...any) string {
			out := make([]string, 0, len(args))
			for _, a := range args {
				if a != nil {
					out = append(out, fmt.Sprintf("%q", strval(a)))
				}
			}
			return strings.Join(out, " ")
		},
		"b64enc": func(s any) string { return base64.StdEncoding.EncodeToString([]byte(strval(s))) },
		"toYaml": func(v any) string {
			data, err := yaml.Marshal(v)
			if err != nil {
				return "" // as Helm
			}
			return strings.TrimSuffix(string(data), "\n")
		},
		"indent":  indent,
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"dict": func(kv ...any) (map[string]any, error) {
			if len(kv)%2 != 0 {
				return nil, errors.New("dict: odd number of arguments")
			}
			m := make(map[string]any, len(kv)/2)
			for i := 0; i < len(kv); i += 2 {
				m[strval(kv[i])] = kv[i+1]
			}
			return m, nil
		},
	}
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func strval(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case fmt.Stringer:
		return x.String()
	case error:
		return x.Error()
	}
	return fmt.Sprintf("%v", v)
}

// empty is sprig's notion of an empty value.
func empty(v any) bool {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return true
	}
	switch rv.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return rv.Len() == 0
	case reflect.Bool:
		return !rv.Bool()
	case reflect.Complex64, reflect.Complex128:
		return rv.Complex() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return rv.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return rv.Float() == 0
	case reflect.Struct:
		return false
	default:
		return rv.IsNil()
	}
}

// docSeparator is Helm's manifest separator: a line starting with "---".
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

func crdFS() fs.FS { return chart.FS }
