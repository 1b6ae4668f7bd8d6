package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
)

// PatchOp is one RFC 6902 operation. Diff only makes add, remove and
// replace.
type PatchOp struct {
	Op    string
	Path  string
	Value any
}

// MarshalJSON always writes "value" for add and replace (even null) and
// never for remove.
func (o PatchOp) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// maxLCSCells bounds the work of aligning two arrays; larger arrays that
// differ are replaced whole (still a correct patch).
const maxLCSCells = 1 << 20

// Diff returns the operations that turn the JSON document from into to,
// applied in order. Object members are compared by key; arrays are
// aligned on a longest common subsequence of equal elements, so elements
// the mutation did not touch are left alone (and with them any fields a
// newer API server sent that this build's types do not know).
func Diff(from, to []byte) ([]PatchOp, error) {
	a, err := decodeJSON(from)
	if err != nil {
		return nil, fmt.Errorf("original document: %w", err)
	}
	b, err := decodeJSON(to)
	if err != nil {
		return nil, fmt.Errorf("modified document: %w", err)
	}
	var ops []PatchOp
	diffValue("", a, b, &ops)
	return ops, nil
}

// PatchFor returns the JSON patch that makes, in raw (an object exactly as
// received, possibly with fields this build's types do not know), the
// changes between from and to (typed, decoded from raw), and raw with the
// patch applied. The patch is checked against raw: when raw lacks a
// parent the typed form always has (a request without "spec"), each
// changed top-level member is replaced whole instead.
func PatchFor(raw []byte, from, to any) (patch, patched []byte, err error) {
	a, err := json.Marshal(from)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal original: %w", err)
	}
	b, err := json.Marshal(to)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal modified: %w", err)
	}
	ops, err := Diff(a, b)
	if err != nil {
		return nil, nil, err
	}
	if patch, patched, err = applyOps(raw, ops); err == nil {
		return patch, patched, nil
	}
	rv, err := decodeJSON(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("original object: %w", err)
	}
	rawObj, ok := rv.(map[string]any)
	if !ok {
		return nil, nil, errors.New("original is not a JSON object")
	}
	av, _ := decodeJSON(a)
	bv, _ := decodeJSON(b)
	am, _ := av.(map[string]any)
	bm, _ := bv.(map[string]any)
	if am == nil || bm == nil {
		return nil, nil, errors.New("typed objects are not JSON objects")
	}
	for k, v := range bm {
		if !reflect.DeepEqual(am[k], v) {
			rawObj[k] = v
		}
	}
	for k := range am {
		if _, ok := bm[k]; !ok {
			delete(rawObj, k)
		}
	}
	want, err := json.Marshal(rawObj)
	if err != nil {
		return nil, nil, err
	}
	if ops, err = Diff(raw, want); err != nil {
		return nil, nil, err
	}
	return applyOps(raw, ops)
}

func applyOps(doc []byte, ops []PatchOp) (patch, patched []byte, err error) {
	if ops == nil {
		ops = []PatchOp{}
	}
	if patch, err = json.Marshal(ops); err != nil {
		return nil, nil, err
	}
	if len(ops) == 0 {
		return patch, doc, nil
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, nil, fmt.Errorf("decode patch: %w", err)
	}
	if patched, err = p.Apply(doc); err != nil {
		return nil, nil, fmt.Errorf("apply patch: %w", err)
	}
	return patch, patched, nil
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber() // keep numbers exactly as written
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b[d.InputOffset():])) > 0 {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

func diffValue(path string, a, b any, ops *[]PatchOp) {
	switch av := a.(type) {
	case map[string]any:
		if bv, ok := b.(map[string]any); ok {
			diffObject(path, av, bv, ops)
			return
		}
	case []any:
		if bv, ok := b.([]any); ok {
			diffArray(path, av, bv, ops)
			return
		}
	}
	if !reflect.DeepEqual(a, b) {
		*ops = append(*ops, PatchOp{Op: "replace", Path: path, Value: b})
	}
}

func diffObject(path string, a, b map[string]any, ops *[]PatchOp) {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // deterministic patches
	for _, k := range keys {
		p := path + "/" + escapePointer(k)
		av, inA := a[k]
		bv, inB := b[k]
		switch {
		case inA && !inB:
			*ops = append(*ops, PatchOp{Op: "remove", Path: p})
		case !inA && inB:
			*ops = append(*ops, PatchOp{Op: "add", Path: p, Value: bv})
		default:
			diffValue(p, av, bv, ops)
		}
	}
}

func diffArray(path string, a, b []any, ops *[]PatchOp) {
	if reflect.DeepEqual(a, b) {
		return
	}
	if len(a) == len(b) {
		// Same length: element-wise changes (the common case of an
		// edited element) give the smallest patch.
		differ := 0
		for i := range a {
			if !reflect.DeepEqual(a[i], b[i]) {
				differ++
			}
		}
		if differ == 1 {
			for i := range a {
				diffValue(path+"/"+strconv.Itoa(i), a[i], b[i], ops)
			}
			return
		}
	}
	if (len(a)+1)*(len(b)+1) > maxLCSCells {
		*ops = append(*ops, PatchOp{Op: "replace", Path: path, Value: b})
		return
	}
	// lcs[i][j] = length of the LCS of a[i:] and b[j:].
	n, m := len(a), len(b)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if reflect.DeepEqual(a[i], b[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	// Walk the alignment; k is the index in the array as patched so far.
	i, j, k := 0, 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && reflect.DeepEqual(a[i], b[j]):
			i, j, k = i+1, j+1, k+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			*ops = append(*ops, PatchOp{Op: "add", Path: path + "/" + strconv.Itoa(k), Value: b[j]})
			j, k = j+1, k+1
		default:
			*ops = append(*ops, PatchOp{Op: "remove", Path: path + "/" + strconv.Itoa(k)})
			i++
		}
	}
}

// escapePointer escapes a member name for a JSON pointer (RFC 6901):
// annotation keys like trellis.io/inject contain "/".
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
