// Package origdst recovers the original destination of a connection that
// iptables REDIRECTed to the proxy (transparent mode).
package origdst

import "errors"

// ErrUnsupported is returned on platforms without SO_ORIGINAL_DST.
var ErrUnsupported = errors.New("origdst: SO_ORIGINAL_DST is only supported on linux")
