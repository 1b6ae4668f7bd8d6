package forward

import "net/http"

// Go's HTTP clients and servers add fields of their own when a message
// lacks them: a client a User-Agent (and Accept-Encoding, turned off on
// every transport of the proxy with DisableCompression, which also stops
// the transparent decompression that comes with it), a server a Date and a
// Content-Type sniffed from the body. A proxy must not: the app receives
// what its peer sent (docs/proxy.md, "What the mesh changes"). Each of
// them leaves a field alone when its key is present, and writes nothing
// for a nil value, so an absent field is marked present and empty.
var (
	clientDefaults = [...]string{"User-Agent"}
	serverDefaults = [...]string{"Date", "Content-Type"}
)

// KeepRequestAbsent marks the fields a Go client would add to a request
// that lacks them (User-Agent) so that none is sent.
func KeepRequestAbsent(h http.Header) {
	keepAbsent(h, clientDefaults[:])
}

// keepResponseAbsent marks the fields a Go server would add to a response
// that lacks them (Date, Content-Type) so that none is sent.
func keepResponseAbsent(h http.Header) {
	keepAbsent(h, serverDefaults[:])
}

func keepAbsent(h http.Header, keys []string) {
	for _, k := range keys {
		if _, ok := h[k]; !ok {
			h[k] = nil
		}
	}
}
