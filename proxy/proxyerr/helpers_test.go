package proxyerr

import (
	"net"
	"syscall"
)

func dialErr() net.OpError {
	return net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}
