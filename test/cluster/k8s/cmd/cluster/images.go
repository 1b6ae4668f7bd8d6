package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/trellis-mesh/trellis/test/cluster/k8s/internal/ociimage"
)

// productImage is one Trellis image: a static binary from `make build` at
// /<binary>, its entrypoint. Names follow charts/trellis/values.yaml:
// <registry>/<name>:<tag>, registry "trellis" unless TRELLIS_IMAGE_REPO says
// otherwise, tag the build's version (cluster.mk passes it).
type productImage struct {
	name     string // image name under the registry
	binary   string // in bin/
	user     string // image default; pods set their own runAsUser anyway
	iptables bool   // add Debian's iptables (the init image)
}

var productImages = []productImage{
	{name: "proxy", binary: "trellis-proxy", user: "65532:65532"},
	{name: "controller", binary: "trellis-controller", user: "65532:65532"},
	// The injector runs /trellis-init as root with NET_ADMIN and NET_RAW;
	// as a check container (--check) it runs non-root with no capability.
	{name: "init", binary: "trellis-init", iptables: true},
	// The installer DaemonSet copies /trellis-cni into the node's CNI bin
	// directory: it runs as root.
	{name: "cni", binary: "trellis-cni"},
	{name: "demo-app", binary: "trellis-demo-app", user: "65532:65532"},
}

// images builds bin/images/<name>.tar for every Trellis image and imports
// them into the cluster's containerd when it is up.
func (h *harness) images(ctx context.Context) error {
	// The init image copies the host's iptables: install the node's
	// packages now, not at cluster-up (the quick start runs images first).
	if err := ensurePackages(ctx, h); err != nil {
		return err
	}
	outDir := filepath.Join(h.repoBin, "images")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	var built, sums []string
	var ipt []ociimage.File
	for _, pi := range productImages {
		bin := filepath.Join(h.repoBin, pi.binary)
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s: %w (run `make build` first)", pi.binary, err)
		}
		files := []ociimage.File{{Path: "/" + pi.binary, Source: bin}, {Path: "/tmp", Dir: true, Mode: 0o1777}}
		if pi.iptables {
			if ipt == nil {
				var err error
				if ipt, err = iptablesFiles(ctx); err != nil {
					return fmt.Errorf("%s image: %w", pi.name, err)
				}
			}
			files = append(files, ipt...)
		}
		out := filepath.Join(outDir, pi.name+".tar")
		ref := h.imageRef(pi.name)
		d, err := ociimage.Build(ociimage.Spec{
			Ref:        ref,
			Files:      files,
			Entrypoint: []string{"/" + pi.binary},
			User:       pi.user,
		}, out)
		if err != nil {
			return err
		}
		built = append(built, out)
		sums = append(sums, fmt.Sprintf("%s %s %s", d, ref, filepath.Base(out)))
	}
	if err := os.WriteFile(filepath.Join(outDir, "images.txt"), []byte(strings.Join(sums, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	for _, s := range sums {
		fmt.Println(s)
	}
	if ok, _ := h.isUp(ctx); ok {
		// The extra images too, when extras has built them (a cluster
		// that was up before they existed gets them here).
		extra, err := h.extraTars(ctx, false)
		if err != nil {
			return err
		}
		if err := h.importImages(ctx, append(built, extra...)); err != nil {
			return err
		}
		h.log.Info("imported into the cluster's containerd", "images", len(built))
	}
	return nil
}

func (h *harness) imageRef(name string) string {
	return strings.TrimSuffix(h.imageRepo, "/") + "/" + name + ":" + h.imageTag
}

// iptablesFiles is Debian's xtables-nft-multi with the iptables names
// pointing at it, the shared libraries ldd lists for it and its extension
// modules, and the dynamic loader.
func iptablesFiles(ctx context.Context) ([]ociimage.File, error) {
	const multi = "/usr/sbin/xtables-nft-multi"
	mods, err := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	if err != nil {
		return nil, err
	}
	if len(mods) == 0 {
		return nil, errors.New("no xtables modules in /usr/lib/x86_64-linux-gnu/xtables (apt-get install iptables)")
	}
	libs := map[string]bool{}
	for _, f := range append([]string{multi}, mods...) {
		out, err := run(ctx, "ldd", f)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(out, "\n") {
			fields := strings.Fields(l)
			for _, fl := range fields {
				if strings.HasPrefix(fl, "/") {
					libs[fl] = true
				}
			}
		}
	}
	files := []ociimage.File{{Path: multi, Source: multi}}
	for _, m := range mods {
		files = append(files, ociimage.File{Path: m, Source: m, Mode: 0o644})
	}
	var names []string
	for l := range libs {
		names = append(names, l)
	}
	sort.Strings(names)
	for _, l := range names {
		// Content through the symlink, stored at the path the loader looks up.
		files = append(files, ociimage.File{Path: l, Source: l, Mode: 0o755})
	}
	for _, n := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore", "ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore"} {
		files = append(files, ociimage.File{Path: "/usr/sbin/" + n, Link: "xtables-nft-multi"})
	}
	if _, err := os.Stat("/etc/protocols"); err == nil {
		files = append(files, ociimage.File{Path: "/etc/protocols", Source: "/etc/protocols", Mode: 0o644})
	}
	// /run holds iptables' lock (an emptyDir there keeps the root read-only).
	files = append(files, ociimage.File{Path: "/run", Dir: true})
	return files, nil
}
