package install

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"sigs.k8s.io/yaml"

	chart "github.com/trellis-mesh/trellis/charts/trellis"
)

// Values is a chart's values tree, as Helm holds it: nested
// map[string]any from YAML (numbers are float64, as Helm reads them).
type Values map[string]any

// setBlocked are value paths --set may not touch: identity material has
// its own flags, which validate it.
var setBlocked = []string{"identity.issuer", "identity.trustAnchorsPEM", "identity.externalIssuer", "webhook.tls"}

// DefaultValues returns the chart's values.yaml, merged with
// values-ha.yaml when ha is true: exactly what Helm starts from with
// `-f values-ha.yaml`.
func DefaultValues(ha bool) (Values, error) {
	v, err := readValuesFile("values.yaml")
	if err != nil {
		return nil, err
	}
	if ha {
		h, err := readValuesFile("values-ha.yaml")
		if err != nil {
			return nil, err
		}
		v.Merge(h)
	}
	return v, nil
}

func readValuesFile(name string) (Values, error) {
	data, err := fs.ReadFile(chart.FS, name)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	var v Values
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	if v == nil {
		v = Values{}
	}
	return v, nil
}

// Merge copies src into v, recursing into maps present in both, as Helm
// coalesces a values file over the chart's defaults.
func (v Values) Merge(src Values) {
	for k, sv := range src {
		sm, sIsMap := asMap(sv)
		dm, dIsMap := asMap(v[k])
		if sIsMap && dIsMap {
			dm.Merge(sm)
			v[k] = dm
			continue
		}
		if sIsMap {
			c := Values{}
			c.Merge(sm)
			v[k] = map[string]any(c)
			continue
		}
		v[k] = sv
	}
}

func asMap(x any) (Values, bool) {
	switch m := x.(type) {
	case map[string]any:
		return Values(m), true
	case Values:
		return m, true
	}
	return nil, false
}

// Clone returns a deep copy of the maps of v (leaves are immutable).
func (v Values) Clone() Values {
	out := make(Values, len(v))
	for k, x := range v {
		if m, ok := asMap(x); ok {
			out[k] = map[string]any(m.Clone())
			continue
		}
		out[k] = x
	}
	return out
}

// Get returns the value at a dotted path.
func (v Values) Get(path string) (any, bool) {
	parts := strings.Split(path, ".")
	cur := v
	for i, p := range parts {
		x, ok := cur[p]
		if !ok {
			return nil, false
		}
		if i == len(parts)-1 {
			return x, true
		}
		if cur, ok = asMap(x); !ok {
			return nil, false
		}
	}
	return nil, false
}

// put sets the value at a dotted path, creating maps on the way.
func (v Values) put(path string, x any) {
	parts := strings.Split(path, ".")
	cur := v
	for _, p := range parts[:len(parts)-1] {
		next, ok := asMap(cur[p])
		if !ok {
			next = Values{}
		}
		cur[p] = map[string]any(next)
		cur = next
	}
	cur[parts[len(parts)-1]] = x
}

// ParseSet parses one --set argument, "key=value[,key=value...]", into
// ordered key/value pairs. Keys are dotted paths of letters, digits, '-'
// and '_'.
func ParseSet(arg string) ([][2]string, error) {
	if arg == "" {
		return nil, errors.New("--set: empty; want key=value")
	}
	var out [][2]string
	for _, kv := range strings.Split(arg, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want key=value", kv)
		}
		if err := checkKey(k); err != nil {
			return nil, fmt.Errorf("--set %q: %w", kv, err)
		}
		out = append(out, [2]string{k, val})
	}
	return out, nil
}

func checkKey(k string) error {
	if k == "" {
		return errors.New("empty key")
	}
	for _, part := range strings.Split(k, ".") {
		if part == "" {
			return errors.New("empty path element in key")
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("key has character %q; keys are dotted paths of letters, digits, '-' and '_'", r)
			}
		}
	}
	return nil
}

// Set assigns a --set value to an existing scalar key, converted to the
// type of the chart's default (bool, number or string), so a typo in a key
// or a wrong type is an error rather than a silently ignored value.
func (v Values) Set(key, raw string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("--set %s: %w", key, err)
	}
	for _, b := range setBlocked {
		if key == b || strings.HasPrefix(key, b+".") {
			return fmt.Errorf("--set %s: identity material is set with the --identity-* flags, which check it", key)
		}
	}
	cur, ok := v.Get(key)
	if !ok {
		return fmt.Errorf("--set %s: no such value (known: %s)", key, strings.Join(v.scalarKeys(), ", "))
	}
	switch cur.(type) {
	case bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("--set %s=%s: want true or false", key, raw)
		}
		v.put(key, b)
	case float64, int, int64:
		n, err := strconv.ParseInt(raw, 10, 32)
		if err != nil {
			return fmt.Errorf("--set %s=%s: want an integer", key, raw)
		}
		v.put(key, float64(n))
	case string:
		if !utf8.ValidString(raw) {
			return fmt.Errorf("--set %s: value is not valid UTF-8", key)
		}
		v.put(key, raw)
	default:
		return fmt.Errorf("--set %s: not a single value; set its leaves (%s)", key, strings.Join(v.scalarKeysUnder(key), ", "))
	}
	return nil
}

func (v Values) scalarKeys() []string { return v.scalarKeysUnder("") }

func (v Values) scalarKeysUnder(prefix string) []string {
	var out []string
	var walk func(p string, m Values)
	walk = func(p string, m Values) {
		for _, k := range sortedKeys(m) {
			full := k
			if p != "" {
				full = p + "." + k
			}
			if sub, ok := asMap(m[k]); ok {
				walk(full, sub)
				continue
			}
			blocked := false
			for _, b := range setBlocked {
				if full == b || strings.HasPrefix(full, b+".") {
					blocked = true
				}
			}
			if !blocked {
				out = append(out, full)
			}
		}
	}
	start := v
	if prefix != "" {
		x, _ := v.Get(prefix)
		m, ok := asMap(x)
		if !ok {
			return nil
		}
		start = m
	}
	walk(prefix, start)
	return out
}

func sortedKeys(m Values) []string {
	return slices.Sorted(maps.Keys(m))
}
