package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// An isolated cluster (profile.isolated: cluster b) runs every process of
// its node in network, mount and UTS namespaces of its own, so that it
// shares nothing with cluster a that the two would fight over: iptables,
// the CNI bridge, /run/netns and /run/containerd, /var/lib/cni and
// /var/log/containers (each private, a tmpfs or an overlay), the node name
// (the hostname), and the pod cgroups (its own cgroupRoot). The
// namespaces are made once and kept as bind mounts in <dir>/ns, so that
// `down` and the next `up` can enter them; they are entered with setns
// (nsenter), never with `ip netns exec`, which remounts /sys and hides the
// cgroup v1 hierarchies the kubelet needs. The host reaches the node over
// a veth pair (hostLink <-> eth0) and routes the cluster's pod CIDR to it,
// so pods of the two clusters reach each other.

// innerEnv marks the harness process running inside the namespaces.
const innerEnv = "TRELLIS_CLUSTER_INNER"

// nsKinds are the namespaces of an isolated cluster: each one's name
// under /proc/PID/ns (and its bind mount's file name) and nsenter's flag.
var nsKinds = []struct{ proc, nsenter string }{{"net", "net"}, {"mnt", "mount"}, {"uts", "uts"}}

func (h *harness) nsDir(parts ...string) string {
	return filepath.Join(append([]string{h.dir, "ns"}, parts...)...)
}

// inside: this process runs in the cluster's own namespaces (always true
// for cluster a, whose namespaces are the host's).
func (h *harness) inside() bool { return !h.p.isolated || os.Getenv(innerEnv) == "1" }

// nsExist: the namespaces are kept (every one bind-mounted).
func (h *harness) nsExist() bool {
	mounted := mountsUnder(h.nsDir())
	for _, k := range nsKinds {
		if !slices.Contains(mounted, h.nsDir(k.proc)) {
			return false
		}
	}
	return true
}

// upIsolated is `up` from the host: the Debian packages and binaries
// first (the namespaces have no route to the Go module proxy), the
// namespaces and the link if missing, then `up` inside them.
func (h *harness) upIsolated(ctx context.Context) (err error) {
	if err := ensurePackages(ctx, h); err != nil {
		return err
	}
	if _, err := h.buildAll(ctx); err != nil {
		return err
	}
	if err := joinMachine(h.p.name); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			h.log.Error("up failed; removing the namespaces", "err", err)
			if derr := h.removeNamespaces(context.WithoutCancel(ctx)); derr != nil {
				h.log.Error("removing the namespaces", "err", derr)
			}
			if lerr := leaveMachine(h.p.name); lerr != nil {
				h.log.Error("machine settings", "err", lerr)
			}
		}
	}()
	// The host routes between the clusters' pods.
	if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if !h.nsExist() {
		if err := h.makeNamespaces(ctx); err != nil {
			return err
		}
	}
	return h.inNamespaces(ctx, "up")
}

// downIsolated is `down` from the host: `down` inside the namespaces, then
// the namespaces, the link and the route, and the machine's settings if
// this was the last cluster.
func (h *harness) downIsolated(ctx context.Context) error {
	h.stopExtras()
	var problems []string
	if h.nsExist() {
		if err := h.inNamespaces(ctx, "down"); err != nil {
			problems = append(problems, err.Error())
		}
	} else if _, err := os.Stat(h.runDir()); err == nil {
		// No way into the namespaces: its processes (if any survived)
		// hold them; stop them, and the kernel removes the rest.
		for _, c := range slices.Backward(components) {
			h.stop(ctx, c, 10*time.Second)
		}
		if err := os.RemoveAll(h.runDir()); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if err := h.removeNamespaces(ctx); err != nil {
		problems = append(problems, err.Error())
	}
	if err := leaveMachine(h.p.name); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("teardown left something behind:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// makeNamespaces creates the namespaces with a holder process, keeps them
// as bind mounts, links them to the host, and sets them up (nsInit).
func (h *harness) makeNamespaces(ctx context.Context) error {
	if err := os.MkdirAll(h.nsDir(), 0o755); err != nil {
		return err
	}
	// A mount namespace can be bind-mounted only onto a private mount.
	if !slices.Contains(mountsUnder(h.nsDir()), h.nsDir()) {
		if err := syscall.Mount(h.nsDir(), h.nsDir(), "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount %s: %w", h.nsDir(), err)
		}
	}
	if err := syscall.Mount("", h.nsDir(), "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", h.nsDir(), err)
	}
	holder := exec.CommandContext(ctx, "sleep", "infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS}
	if err := holder.Start(); err != nil {
		return fmt.Errorf("new namespaces: %w", err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	pid := strconv.Itoa(holder.Process.Pid)
	for _, k := range nsKinds {
		f := h.nsDir(k.proc)
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
		if err := syscall.Mount(filepath.Join("/proc", pid, "ns", k.proc), f, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("keep the %s namespace at %s: %w", k, f, err)
		}
	}
	if _, err := net.InterfaceByName(h.p.hostLink); err == nil {
		return fmt.Errorf("a %s link already exists on this host: remove it first (ip link del %s)", h.p.hostLink, h.p.hostLink)
	}
	prefix := "/" + strconv.Itoa(h.p.linkPrefixLength)
	for _, args := range [][]string{
		{"link", "add", h.p.hostLink, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"addr", "add", h.p.hostIP + prefix, "dev", h.p.hostLink},
		{"link", "set", h.p.hostLink, "up"},
	} {
		if _, err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	if err := h.inNamespaces(ctx, "ns-init"); err != nil {
		return err
	}
	// Its pods and Services from the host (and from cluster a's pods) as
	// cluster a's are: through its node.
	for _, cidr := range []string{h.p.clusterCIDR, h.p.serviceCIDR} {
		if _, err := run(ctx, "ip", "route", "add", cidr, "via", h.p.nodeIP, "dev", h.p.hostLink); err != nil {
			return err
		}
	}
	h.log.Info("namespaces ready", "node", h.p.nodeIP, "host", h.p.hostIP, "link", h.p.hostLink)
	return nil
}

// nsInit runs inside the new namespaces, once: mounts of its own where
// the node writes outside the harness directory, the hostname (the node
// name), and the network.
func (h *harness) nsInit(ctx context.Context) error {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	for _, d := range []string{"/run", "/var/log"} {
		if err := syscall.Mount("tmpfs", d, "tmpfs", 0, "mode=755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", d, err)
		}
	}
	upper, work := filepath.Join(h.dir, "varlib", "upper"), filepath.Join(h.dir, "varlib", "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := syscall.Mount("overlay", "/var/lib", "overlay", 0, "lowerdir=/var/lib,upperdir="+upper+",workdir="+work); err != nil {
		return fmt.Errorf("overlay on /var/lib: %w", err)
	}
	host, err := os.ReadFile("/proc/sys/kernel/hostname")
	if err != nil {
		return err
	}
	if err := syscall.Sethostname([]byte(strings.TrimSpace(string(host)) + "-" + h.p.name)); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", h.p.nodeIP + "/" + strconv.Itoa(h.p.linkPrefixLength), "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"route", "add", "default", "via", h.p.hostIP},
	} {
		if _, err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// inNamespaces runs this harness's command cmd inside the namespaces.
func (h *harness) inNamespaces(ctx context.Context, cmd string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"--wd=" + h.modDir}
	for _, k := range nsKinds {
		args = append(args, "--"+k.nsenter+"="+h.nsDir(k.proc))
	}
	args = append(args, "--", exe, "-bin", h.repoBin, cmd)
	c := exec.CommandContext(ctx, "nsenter", args...)
	c.Env = append(os.Environ(), innerEnv+"=1", "TRELLIS_CLUSTER="+h.p.name, "TRELLIS_CLUSTER_DIR="+h.dir, "TRELLIS_CLUSTER_CACHE="+h.cache)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s inside cluster %s's namespaces: %w", cmd, h.p.name, err)
	}
	return nil
}

// removeNamespaces lets the namespaces go (the kernel removes the veth
// pair, the route and every mount inside with them) and removes their
// files and the overlay's upper layer.
func (h *harness) removeNamespaces(ctx context.Context) error {
	var problems []string
	for _, k := range nsKinds {
		f := h.nsDir(k.proc)
		if err := syscall.Unmount(f, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			problems = append(problems, fmt.Sprintf("unmount %s: %v", f, err))
		}
	}
	if err := syscall.Unmount(h.nsDir(), syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		problems = append(problems, fmt.Sprintf("unmount %s: %v", h.nsDir(), err))
	}
	for _, d := range []string{h.nsDir(), filepath.Join(h.dir, "varlib")} {
		if err := os.RemoveAll(d); err != nil {
			problems = append(problems, err.Error())
		}
	}
	// The peer goes with its namespace; the host end goes with its peer,
	// once the last process that held the namespace is gone.
	if err := poll(ctx, 10*time.Second, 100*time.Millisecond, "link "+h.p.hostLink+" removal", func() (bool, error) {
		_, err := net.InterfaceByName(h.p.hostLink)
		return err != nil, nil
	}); err != nil {
		if _, derr := run(ctx, "ip", "link", "del", h.p.hostLink); derr != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// makeCgroupRoot creates the cluster's cgroupRoot in every cgroup
// controller: the kubelet refuses a cgroupRoot that does not exist.
func (p profile) makeCgroupRoot() error {
	if p.cgroupRoot == "/" || p.cgroupRoot == "" {
		return nil
	}
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	if exists("/sys/fs/cgroup/cgroup.controllers") { // v2: one hierarchy
		return os.MkdirAll(filepath.Join("/sys/fs/cgroup", p.cgroupRoot), 0o755)
	}
	for _, e := range ents {
		if !e.IsDir() { // the cpu,cpuacct style names are symlinks
			continue
		}
		if err := os.MkdirAll(filepath.Join("/sys/fs/cgroup", e.Name(), p.cgroupRoot), 0o755); err != nil {
			return fmt.Errorf("cgroup root: %w", err)
		}
	}
	return nil
}
