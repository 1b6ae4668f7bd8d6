// Package headermod applies a route's header modifier (the Gateway API's
// RequestHeaderModifier and ResponseHeaderModifier filters, as
// apiv1.HeaderModifier): set, add, then remove, compiled once per control
// plane answer. Names and values are checked when compiled (httpguts), so
// that a route can never smuggle a CR or LF into a request or response,
// and the mesh's own headers (trellis-*) and the connection's (Host,
// Content-Length, hop-by-hop) are out of a route's reach.
package headermod

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// MaxEntries bounds the entries of one modifier (the Gateway API allows
// 16 of each kind).
const MaxEntries = 64

// MaxValue bounds a value a route sets or adds.
const MaxValue = 4096

// Modifier is a compiled apiv1.HeaderModifier; the zero value (and nil)
// changes nothing.
type Modifier struct {
	set, add []kv
	remove   []string
}

type kv struct{ name, value string }

// reserved are the headers a route may not touch: they frame the message
// or the connection, or the proxy sets them.
var reserved = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true, "Upgrade": true,
}

// Compile checks and compiles m; nil gives nil.
func Compile(m *apiv1.HeaderModifier) (*Modifier, error) {
	if m == nil || len(m.GetSet())+len(m.GetAdd())+len(m.GetRemove()) == 0 {
		return nil, nil
	}
	if len(m.GetSet())+len(m.GetAdd())+len(m.GetRemove()) > MaxEntries {
		return nil, fmt.Errorf("more than %d header modifications", MaxEntries)
	}
	c := &Modifier{}
	var errs []error
	for _, h := range m.GetSet() {
		e, err := entry(h.GetName(), h.GetValue())
		errs = append(errs, err)
		c.set = append(c.set, e)
	}
	for _, h := range m.GetAdd() {
		e, err := entry(h.GetName(), h.GetValue())
		errs = append(errs, err)
		c.add = append(c.add, e)
	}
	for _, name := range m.GetRemove() {
		e, err := entry(name, "")
		errs = append(errs, err)
		c.remove = append(c.remove, e.name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func entry(name, value string) (kv, error) {
	if !httpguts.ValidHeaderFieldName(name) {
		return kv{}, fmt.Errorf("header name %q is not a valid field name", name)
	}
	canon := textproto.CanonicalMIMEHeaderKey(name)
	if reserved[canon] || strings.HasPrefix(canon, "Trellis-") {
		return kv{}, fmt.Errorf("header %q may not be changed by a route", name)
	}
	if len(value) > MaxValue || !httpguts.ValidHeaderFieldValue(value) {
		return kv{}, fmt.Errorf("header %q: value is too long or has a control character", name)
	}
	return kv{name: canon, value: value}, nil
}

// Apply changes h: set replaces every value, add appends one, remove
// drops the field. It allocates only the values it stores.
func (m *Modifier) Apply(h http.Header) {
	if m == nil {
		return
	}
	for _, e := range m.set {
		h[e.name] = []string{e.value}
	}
	for _, e := range m.add {
		h[e.name] = append(h[e.name], e.value)
	}
	for _, name := range m.remove {
		delete(h, name)
	}
}

// EditResponse is Apply, as a pipeline.ResponseEdit.
func (m *Modifier) EditResponse(h http.Header) { m.Apply(h) }
