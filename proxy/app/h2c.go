package app

import (
	"net/http"
	"strings"
)

// dropH2CUpgrade removes "h2c" from an HTTP/1 request's Upgrade (and its
// HTTP2-Settings) and reports whether another upgrade is still asked
// for. An h2c upgrade the app accepted would turn the caller's connection
// into HTTP/2 spliced straight to the app: every later stream on it would
// reach the app without the authz stage's per-request decision (the first
// request, on a route open to everyone, would open them all). Without the
// upgrade the request is an ordinary one; a caller that wants HTTP/2 to
// the app speaks it to the proxy (prior knowledge), stream by stream.
func dropH2CUpgrade(h http.Header) bool {
	var kept []string
	h2c := false
	for _, v := range h["Upgrade"] {
		for _, tok := range strings.Split(v, ",") {
			switch tok = strings.TrimSpace(tok); {
			case strings.EqualFold(tok, "h2c"):
				h2c = true
			case tok != "":
				kept = append(kept, tok)
			}
		}
	}
	if !h2c {
		return true
	}
	delete(h, "Http2-Settings")
	if len(kept) == 0 {
		delete(h, "Upgrade")
		return false
	}
	h["Upgrade"] = []string{strings.Join(kept, ", ")}
	return true
}
