// Package rawio gives a TCP connection a Read and Write that make their
// system call without telling the Go scheduler (syscall.RawSyscall), while
// still parking on the runtime's network poller when the socket is not
// ready (syscall.RawConn).
//
// Why: every scheduler-visible system call (syscall.Syscall, which net's
// own Read and Write use) wakes the runtime's sysmon thread when it is in
// its deep sleep, and a wake from a system call resets sysmon to polling
// every 20 µs. A proxy at a moderate rate goes idle between requests, so
// sysmon deep-sleeps, is woken by the next request's first read, and polls
// at 20 µs through the request: futex wake-ups, nanosleeps and context
// switches that cost more CPU than the request itself (measured with perf
// in bench/README.md). Reads and writes of a non-blocking socket never
// block, so the scheduler has nothing to do for them: RawSyscall is safe,
// and neither sysmon nor a P hand-off is involved.
package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn is a *net.TCPConn with raw-syscall Read and Write. Everything else
// (deadlines, CloseWrite, SyscallConn) is the TCPConn's, through
// embedding; so are ReadFrom and WriteTo, which io.Copy prefers: they take
// net's own path (splice where both ends are plain TCP), not the raw one.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn
}

// Wrap returns c with raw-syscall Read and Write when c is a
// *net.TCPConn, and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		if rc := New(tc); rc != nil {
			return rc
		}
	}
	return c
}

// New wraps tc; nil when tc has no file descriptor to work on.
func New(tc *net.TCPConn) *Conn {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &Conn{TCPConn: tc, rc: rc}
}

// Read reads like (*net.TCPConn).Read: io.EOF at the peer's FIN, errors
// as *net.OpError.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case 0:
				n = int(r)
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // park on the poller, then try again
			default:
				errno = e
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	raceAfterRead(p, n)
	return n, nil
}

// Write writes all of p, as (*net.TCPConn).Write does, parking on the
// poller while the socket's send buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	if len(p) == 0 {
		return 0, nil
	}
	raceBeforeWrite()
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	raceAfterWrite(p, n)
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError wraps err as net does; RawConn's own errors (closed, deadline)
// come as an OpError of "raw-read" or "raw-write", whose cause is kept.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
