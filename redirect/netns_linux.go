//go:build linux

package redirect

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs programs inside the network namespace at Path (e.g.
// /var/run/netns/cni-..., or /proc/PID/ns/net). trellis-cni uses it to
// program a pod's rules from the host.
type InNetns struct {
	Path string
}

// Run implements Runner. The child is forked from an OS thread that joined
// the namespace, so it starts there; the thread is then thrown away (the
// goroutine exits still locked) so no other goroutine ever runs in the
// wrong namespace.
func (n InNetns) Run(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		fd, err := unix.Open(n.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: fmt.Errorf("opening netns %s: %w", n.Path, err)}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("joining netns %s: %w", n.Path, err)}
			return
		}
		out, err := runCmd(exec.CommandContext(ctx, name, args...), stdin)
		done <- result{out, err}
	}()
	r := <-done
	return r.out, r.err
}
