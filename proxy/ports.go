package proxy

import "net"

// listenerPorts returns the TCP ports of the proxy's listeners: the inbound
// side refuses to forward to any of them, whatever port a peer names.
func listenerPorts(lns ...net.Listener) []uint16 {
	var out []uint16
	for _, ln := range lns {
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			out = append(out, uint16(a.Port))
		}
	}
	return out
}
