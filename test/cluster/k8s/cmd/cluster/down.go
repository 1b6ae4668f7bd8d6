package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// down stops the cluster and removes everything `up` made, in the order
// that leaves nothing behind: pods through the kubelet, then leftover
// containers, containerd and its shims, the control plane, then the host
// state (iptables, mounts, netns, cgroups, the bridge, sysctls). The
// `down` command; it also ends a background extras run, whose cluster is
// going away.
func (h *harness) down(ctx context.Context) error {
	h.stopExtras()
	return h.teardown(ctx)
}

// teardown is down without stopping the extras run: up calls it to clear a
// half-up cluster (a run killed mid-way), and the extras run going on then
// was started for the cluster up is about to make (make e2e and .ci/run
// start it first). Stopping it there failed a CI run: its Jaeger build was
// killed seconds after it began, and three suites had no images.
func (h *harness) teardown(ctx context.Context) error {
	t0 := time.Now()
	st, err := h.loadState()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Stat(h.runDir()); serr != nil {
				h.log.Info("already down")
				if !h.p.isolated {
					return leaveMachine(h.p.name)
				}
				return nil
			}
		}
		h.log.Warn("no usable state; cleaning up with defaults", "err", err)
		st = &state{HostPaths: map[string]bool{}}
		for _, p := range hostPaths {
			st.HostPaths[p] = true // unknown: keep the directories, remove only our entries
		}
	}

	// 1. Pods, through the kubelet, while it and the API server still run.
	if h.pidOf("kube-apiserver") != 0 && h.pidOf("kubelet") != 0 && st.K8sBinary != "" {
		h.stop(ctx, "kube-controller-manager", 5*time.Second) // nothing recreates pods now
		h.stop(ctx, "kube-scheduler", 5*time.Second)
		if _, err := h.kubectl(ctx, "", "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false"); err != nil {
			h.log.Warn("deleting pods", "err", err)
		}
		err := poll(ctx, 30*time.Second, 250*time.Millisecond, "pod deletion", func() (bool, error) {
			var l struct {
				Items []struct{} `json:"items"`
			}
			if err := h.apiGet(ctx, "/api/v1/pods", &l); err != nil {
				return false, err
			}
			return len(l.Items) == 0, nil
		})
		if err != nil {
			h.log.Warn("pods left; killing their containers", "err", err)
		}
	}
	h.stop(ctx, "kube-proxy", 5*time.Second)
	h.stop(ctx, "kubelet", 10*time.Second)

	// 2. Leftover containers, containerd, then its shims (they outlive it).
	sock := h.runDir("containerd", "containerd.sock")
	if h.pidOf("containerd") != 0 {
		if out, err := h.ctr(ctx, "tasks", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				_, _ = h.ctr(ctx, "tasks", "kill", "-s", "SIGKILL", id)
			}
		}
	}
	h.killCgroupProcs(ctx)
	h.stop(ctx, "containerd", 10*time.Second)
	for _, pid := range processesMatching("containerd-shim", "-address "+sock) {
		killWait(ctx, pid, 2*time.Second)
	}

	// 3. The rest of the control plane.
	for _, c := range []string{"kube-controller-manager", "kube-scheduler", "kube-apiserver", "etcd"} {
		h.stop(ctx, c, 10*time.Second)
	}

	// 4. Host state.
	var problems []string
	if st.K8sBinary != "" {
		if _, err := run(ctx, st.K8sBinary, "kube-proxy", "--cleanup", "--v=0"); err != nil {
			h.log.Debug("kube-proxy --cleanup", "err", err)
		}
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		if err := removeChains(ctx, bin); err != nil {
			problems = append(problems, err.Error())
		}
	}
	h.removeNftTables(ctx, st)
	if err := h.unmountUnder(h.dir); err != nil {
		problems = append(problems, err.Error())
	}
	h.removeNetns(st)
	if st.NetnsShared {
		if err := unshareNetnsDir(); err != nil {
			h.log.Warn("netns directory", "err", err)
		}
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil && !st.BridgeExist {
		if _, err := run(ctx, "ip", "link", "del", bridgeName); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if err := removeCgroups(h.p); err != nil {
		problems = append(problems, err.Error())
	}
	h.removeHostPaths(st)
	for k, v := range st.Sysctls {
		if err := writeSysctl(k, v); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if err := os.RemoveAll(h.runDir()); err != nil {
		problems = append(problems, err.Error())
	}

	if !h.p.isolated { // an isolated cluster's downIsolated leaves
		if err := leaveMachine(h.p.name); err != nil {
			problems = append(problems, err.Error())
		}
	}
	problems = append(problems, h.leftovers(ctx)...)
	if len(problems) > 0 {
		return fmt.Errorf("teardown left something behind:\n  %s", strings.Join(problems, "\n  "))
	}
	h.log.Info("cluster down, nothing left behind", "took", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// killCgroupProcs SIGKILLs every process still in a kubepods cgroup: the
// containers whose tasks containerd did not stop.
func (h *harness) killCgroupProcs(ctx context.Context) {
	for range 3 {
		var pids []int
		_ = filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", h.p.cgroupRoot, "kubepods"), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ours reports whether an iptables chain belongs to Kubernetes or the CNI
// plugins, the only chains this harness's cluster creates.
func ours(chain string) bool {
	return strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")
}

// removeChains deletes every rule that jumps to one of our chains, then the
// chains themselves, in every table; other rules are left untouched.
func removeChains(ctx context.Context, bin string) error {
	for _, table := range []string{"filter", "nat", "mangle", "raw"} {
		out, err := run(ctx, bin+"-save", "-t", table)
		if err != nil {
			continue // table not present
		}
		var chains []string
		var jumps []string
		for _, line := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(line, ":"):
				c := strings.Fields(line[1:])[0]
				if ours(c) {
					chains = append(chains, c)
				}
			case strings.HasPrefix(line, "-A "):
				f := strings.Fields(line)
				if len(f) < 2 || ours(f[1]) {
					continue // flushed with its chain
				}
				for i := 2; i+1 < len(f); i++ {
					if (f[i] == "-j" || f[i] == "-g") && ours(f[i+1]) {
						jumps = append(jumps, line)
						break
					}
				}
			}
		}
		if len(chains) == 0 && len(jumps) == 0 {
			continue
		}
		// One restore with --noflush: atomic, touches only these rules.
		var b strings.Builder
		fmt.Fprintf(&b, "*%s\n", table)
		for _, j := range jumps {
			b.WriteString("-D" + strings.TrimPrefix(j, "-A") + "\n")
		}
		for _, c := range chains {
			fmt.Fprintf(&b, "-F %s\n", c)
		}
		for _, c := range chains {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		b.WriteString("COMMIT\n")
		if err := runStdin(ctx, b.String(), bin+"-restore", "--noflush"); err != nil {
			return fmt.Errorf("%s table %s: %w", bin, table, err)
		}
	}
	return nil
}

// removeNftTables deletes the nftables tables that appeared since `up`
// (iptables-nft's filter/nat/mangle and kube-proxy's) once they hold no rule.
func (h *harness) removeNftTables(ctx context.Context, st *state) {
	for _, t := range nftTables(ctx) {
		if slices.Contains(st.NftTables, t) {
			continue
		}
		f := strings.Fields(t) // family name
		if len(f) != 2 {
			continue
		}
		out, err := run(ctx, "nft", "list", "table", f[0], f[1])
		if err != nil {
			continue
		}
		if f[1] != "kube-proxy" && nftHasRules(out) {
			h.log.Warn("nft table has rules that are not ours; leaving it", "table", t)
			continue
		}
		if _, err := run(ctx, "nft", "delete", "table", f[0], f[1]); err != nil {
			h.log.Warn("nft delete table", "table", t, "err", err)
		}
	}
}

// nftHasRules: a line inside a chain that is not its header, policy or "}".
func nftHasRules(listing string) bool {
	for _, l := range strings.Split(listing, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "}" || strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "chain ") || strings.HasPrefix(l, "type ") {
			continue
		}
		return true
	}
	return false
}

func runStdin(ctx context.Context, stdin, name string, args ...string) error {
	cmd := execCommand(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func mountsUnder(prefix string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == prefix || strings.HasPrefix(mp, prefix+"/") {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder lazily unmounts everything below dir, deepest first.
func (h *harness) unmountUnder(dir string) error {
	for range 5 {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			return nil
		}
		sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
		for _, mp := range mps {
			if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				h.log.Debug("unmount", "path", mp, "err", err)
			}
		}
	}
	if mps := mountsUnder(dir); len(mps) > 0 {
		return fmt.Errorf("still mounted: %s", strings.Join(mps, ", "))
	}
	return nil
}

// removeNetns removes the CNI network namespaces created since `up`.
func (h *harness) removeNetns(st *state) {
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "cni-") || slices.Contains(st.Netns, e.Name()) {
			continue
		}
		p := filepath.Join("/var/run/netns", e.Name())
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			h.log.Warn("remove netns", "path", p, "err", err)
		}
	}
}

// removeCgroups removes the kubelet's kubepods hierarchy from every cgroup v1
// controller (or the v2 one), deepest first (rmdir works only on empty
// cgroups), then the cluster's own cgroupRoot.
func removeCgroups(prof profile) error {
	roots := append(prof.kubepodsDirs(), prof.cgroupRootDirs()...)
	var left []string
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for range 20 {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond) // a process may still be exiting
			}
			if err != nil {
				left = append(left, d+": "+err.Error())
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("cgroups left: %s", strings.Join(left, ", "))
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// removeHostPaths removes what the cluster wrote outside the harness
// directory: log symlinks into it, CNI result caches, containerd's shim
// socket directory, and the directories themselves if `up` created them.
func (h *harness) removeHostPaths(st *state) {
	// /var/log/containers holds symlinks the kubelet makes into pod logs.
	if ents, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, e := range ents {
			p := filepath.Join("/var/log/containers", e.Name())
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, h.dir+"/") {
				os.Remove(p)
			}
		}
	}
	if ents, err := os.ReadDir("/var/lib/cni/results"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), cniNetwork+"-") {
				os.Remove(filepath.Join("/var/lib/cni/results", e.Name()))
			}
		}
	}
	for _, p := range hostPaths {
		if st.HostPaths[p] {
			continue
		}
		if p == "/run/containerd" || p == "/var/lib/cni" {
			os.RemoveAll(p) // only our containerd and CNI ran here
			continue
		}
		_ = removeEmptyTree(p)
	}
}

// removeEmptyTree removes p if it contains only empty directories.
func removeEmptyTree(p string) error {
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			return errors.New("not empty")
		}
		if err := removeEmptyTree(filepath.Join(p, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(p)
}

// leftovers double-checks the host after teardown.
func (h *harness) leftovers(ctx context.Context) []string {
	var out []string
	// Every component's command line names a path under run/ (its config,
	// certificates, data or socket); the harness's own shell does not.
	for _, pid := range processesMatching(h.runDir() + "/") {
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(string(cl), "\x00", " ")))
	}
	for _, bin := range []string{"iptables-save", "ip6tables-save"} {
		if s, err := run(ctx, bin); err == nil {
			for _, l := range strings.Split(s, "\n") {
				if strings.HasPrefix(l, ":KUBE-") || strings.HasPrefix(l, ":CNI-") {
					out = append(out, bin+": chain "+strings.Fields(l[1:])[0])
				}
			}
		}
	}
	if m := mountsUnder(h.dir); len(m) > 0 {
		out = append(out, "mounts: "+strings.Join(m, ", "))
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		out = append(out, "link "+bridgeName)
	}
	if m := h.p.kubepodsDirs(); len(m) > 0 {
		out = append(out, "cgroups: "+strings.Join(m, ", "))
	}
	return out
}
