package main

import (
	"fmt"
	"path/filepath"
)

// profile is what differs between the clusters one machine can run side by
// side (TRELLIS_CLUSTER=a, the default, or b): cluster A lives in the
// host's namespaces exactly as it always has; cluster B in network, mount
// and UTS namespaces of its own (isolate.go), with its own CIDRs, node
// name and kubelet cgroupRoot, so that neither kubelet takes the other's
// pods for orphans. Pod CIDRs differ so that the host can route between
// the clusters' pods (the multicluster suites' flat mode); Service CIDRs
// differ so that a Service IP names one cluster.
type profile struct {
	name          string
	serviceCIDR   string
	kubernetesSvc string // the first address of serviceCIDR
	dnsServiceIP  string
	clusterCIDR   string
	podCIDR       string // the node's share of clusterCIDR
	// cgroupRoot is the kubelet's cgroupRoot: its pods' cgroups are
	// <controller><cgroupRoot>/kubepods.
	cgroupRoot string
	// isolated: the cluster runs in its own namespaces, reached from the
	// host over a veth pair: hostLink (hostIP/30) on the host, eth0
	// (nodeIP/30) inside.
	isolated         bool
	hostLink         string
	hostIP, nodeIP   string
	linkPrefixLength int
}

var profiles = map[string]profile{
	"a": {
		name:        "a",
		serviceCIDR: "10.96.0.0/12", kubernetesSvc: "10.96.0.1", dnsServiceIP: "10.96.0.10",
		clusterCIDR: "10.244.0.0/16", podCIDR: "10.244.0.0/24",
		cgroupRoot: "/",
	},
	"b": {
		name:        "b",
		serviceCIDR: "10.112.0.0/12", kubernetesSvc: "10.112.0.1", dnsServiceIP: "10.112.0.10",
		clusterCIDR: "10.245.0.0/16", podCIDR: "10.245.0.0/24",
		cgroupRoot: "/trellis-b",
		isolated:   true, hostLink: "trellis-b", hostIP: "172.31.255.1", nodeIP: "172.31.255.2", linkPrefixLength: 30,
	},
}

// profileFor returns the profile of TRELLIS_CLUSTER (default a).
func profileFor(name string) (profile, error) {
	if name == "" {
		name = "a"
	}
	p, ok := profiles[name]
	if !ok {
		return profile{}, fmt.Errorf("TRELLIS_CLUSTER=%q: one of a, b", name)
	}
	return p, nil
}

// defaultDir is the harness directory of a cluster when
// TRELLIS_CLUSTER_DIR is not set.
func defaultDir(name string) string {
	if name == "" || name == "a" {
		return "/var/tmp/trellis-cluster"
	}
	return "/var/tmp/trellis-cluster-" + name
}

// apiHost is where the API server answers from the host (and from inside
// an isolated cluster's namespaces: its node address is local there).
func (p profile) apiHost() string {
	if p.isolated {
		return p.nodeIP
	}
	return "127.0.0.1"
}

// kubepodsDirs are the kubelet's pod cgroup hierarchies of this cluster
// that exist, one per cgroup v1 controller (or the v2 one).
func (p profile) kubepodsDirs() []string {
	rel := filepath.Join(p.cgroupRoot, "kubepods")
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", rel))
	if v2 := filepath.Join("/sys/fs/cgroup", rel); exists(v2) {
		dirs = append(dirs, v2)
	}
	return dirs
}

// cgroupRootDirs are this cluster's own cgroupRoot directories (none for
// the machine's root), removed by down once their kubepods are gone.
func (p profile) cgroupRootDirs() []string {
	if p.cgroupRoot == "/" || p.cgroupRoot == "" {
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", p.cgroupRoot))
	if v2 := filepath.Join("/sys/fs/cgroup", p.cgroupRoot); exists(v2) {
		dirs = append(dirs, v2)
	}
	return dirs
}
