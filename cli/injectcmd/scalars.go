package injectcmd

import (
	"fmt"
	"slices"
	"strings"
)

// stringMaps are the metadata fields whose values Kubernetes reads as
// strings only.
var stringMaps = []string{"annotations", "labels"}

// checkStringMaps names every annotation or label of meta (an object's
// metadata as decoded from YAML) whose value is not a string, in one
// error. YAML reads an unquoted yes, no, on, off, true, false or number
// as a boolean or number, which Kubernetes refuses with
// "json: cannot unmarshal bool into Go struct field ...".
func checkStringMaps(meta map[string]any) error {
	var bad []string
	for _, field := range stringMaps {
		m, _ := meta[field].(map[string]any)
		for k, v := range m {
			if _, ok := v.(string); ok {
				continue
			}
			bad = append(bad, fmt.Sprintf("%s %s: %s", strings.TrimSuffix(field, "s"), k, describeScalar(v)))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("%s; values must be strings: quote them in the YAML (trellis.io/inject takes \"enabled\" or \"disabled\")",
		strings.Join(bad, "; "))
}

func describeScalar(v any) string {
	switch v := v.(type) {
	case bool:
		return fmt.Sprintf("the unquoted YAML value was read as the boolean %t (an unquoted yes, no, on, off, true or false is one)", v)
	case float64, int64, int:
		return fmt.Sprintf("the unquoted YAML value was read as the number %v", v)
	case nil:
		return "no value (null)"
	default:
		return fmt.Sprintf("a %T, not a string", v)
	}
}
